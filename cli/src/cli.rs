//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use imagecache_core::Digest;

use crate::units::{ByteSize, Ttl, Until};

/// The heading global options are listed under.
const GLOBAL: &str = "Global options";

/// The commands by topic, and examples, after the root's help.
const COMMANDS_BY_TOPIC: &str = "\
Commands by topic:
  Images:     ls (images), inspect, history, search, tag, untag, rm, parent
  Transfer:   load (import), save
  Lifecycle:  prune, lease, df, compact, check
  Caches:     cache lookup, blob
  Store:      info, stats, conformance
  Shell:      completions, man

Examples:
  imagecache load image.tar                   # a docker-archive or OCI archive
  imagecache ls --filter dangling=true
  imagecache --store fs:///var/lib/docker/image/overlay2/imagedb ls
  imagecache prune -a --until 24h --dry-run
  imagecache --store 's3://cache/ci?region=eu-west-3' info";

/// Inspect, import into and prune an imagecache store.
#[derive(Debug, Parser)]
#[command(name = "imagecache", version, about, long_about = None, after_help = COMMANDS_BY_TOPIC)]
pub(crate) struct Cli {
    /// The store: fs://DIR, redb://FILE, s3://BUCKET/PREFIX?…, memory://
    /// [default: a redb file in the user's data directory]
    #[arg(long, global = true, env = "IMAGECACHE_STORE", value_name = "URL", help_heading = GLOBAL)]
    pub(crate) store: Option<String>,

    /// Output format: human, json, or a template for `ls`, `history` and
    /// `inspect` such as '{{.ID}}\t{{.Size}}' or 'table {{.Repository}}\t{{.ID}}'
    /// (Docker's fields; see `imagecache ls --help`).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        default_value = "human",
        value_parser = parse_format,
        value_name = "human|json|TEMPLATE"
    )]
    pub(crate) format: Format,

    /// No progress output on stderr.
    #[arg(long, short, global = true, help_heading = GLOBAL)]
    pub(crate) quiet: bool,

    /// Log what the libraries do on stderr: -v info, -vv debug, -vvv trace
    /// (`RUST_LOG`, when set, decides instead, e.g. `RUST_LOG=imagecache_backends=debug`).
    #[arg(long, short, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub(crate) verbose: u8,

    /// After the command, print on stderr the metrics the libraries
    /// recorded while it ran (backend calls and their time, lookups,
    /// images created, blob bytes, …).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub(crate) metrics: bool,

    /// How log lines look: text, or JSON lines for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = GLOBAL)]
    pub(crate) log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line per event, for people (colours on a terminal).
    Text,
    /// One JSON object per event.
    Json,
}

/// Output formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Format {
    /// Tables and lines for people.
    Human,
    /// JSON for programs.
    Json,
    /// A `{{.Field}}` template (checked by the command that renders it,
    /// which knows its fields and its default table).
    Template(String),
}

fn parse_format(text: &str) -> Result<Format, String> {
    match text {
        "human" | "text" => Ok(Format::Human),
        "json" => Ok(Format::Json),
        t if crate::template::Template::looks_like(t) => {
            // Parse once here so that a mistake is reported before the
            // store is opened.
            crate::template::Template::parse(t, "").map_err(|e| format!("not a template: {e}"))?;
            Ok(Format::Template(t.to_owned()))
        }
        _ => Err(
            "expected human, json, or a template such as '{{.ID}}' or 'table {{.ID}}\\t{{.Size}}'"
                .to_owned(),
        ),
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Load images from docker-archive and OCI archives or layouts (stdin when no input is given).
    #[command(visible_alias = "import")]
    Load {
        /// An archive (`docker save`, skopeo, podman: plain, gzip, bzip2, xz
        /// or zstd) or a layout directory (OCI, extracted docker-archive);
        /// `-` for stdin. Repeat for several.
        #[arg(short = 'i', long = "input", value_name = "FILE|DIR")]
        inputs: Vec<PathBuf>,
        /// More inputs, as with -i.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Which platform of a multi-platform image: OS/ARCH[/VARIANT], or
        /// `all` [default: this machine's].
        #[arg(long)]
        platform: Option<String>,
    },
    /// Save images to a docker-archive or OCI layout (stdout when -o is absent).
    Save {
        /// A file for a tar, a directory (existing and empty, or ending in
        /// `/`) for an extracted layout.
        #[arg(short = 'o', long, value_name = "FILE|DIR")]
        output: Option<PathBuf>,
        /// The layout: docker-archive (what `docker save` writes) or oci.
        /// (`--format` stays the output format of the report, as for every command.)
        #[arg(long, default_value = "docker-archive", value_parser = parse_export_format)]
        layout: imagecache_transfer::ExportFormat,
        /// Image IDs, unique ID prefixes or names.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// List images: those without children, or all with -a.
    #[command(
        visible_alias = "images",
        after_help = "\
Examples:
  imagecache ls -a --no-trunc
  imagecache ls --filter reference='example/*' --filter since=example/base:1
  imagecache ls --format 'table {{.Repository}}\\t{{.ID}}\\t{{.Size}}'
  imagecache ls -q | xargs imagecache rm"
    )]
    Ls {
        /// Show every image, intermediate ones included.
        #[arg(long, short)]
        all: bool,
        /// Only image IDs, each once.
        #[arg(long, short)]
        quiet: bool,
        /// Full image IDs.
        #[arg(long)]
        no_trunc: bool,
        /// A DIGEST column: the digest of each name given by digest
        /// (`repository@sha256:…`).
        #[arg(long)]
        digests: bool,
        /// Only images matching: `dangling=true|false`, `before=IMAGE`,
        /// `since=IMAGE`, `reference=PATTERN`, `label=KEY[=VALUE]` (repeat
        /// for each; the same key repeated means either).
        #[arg(long, short, value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// Show images' configs as stored, with what the store knows about them.
    Inspect {
        /// Image IDs, unique ID prefixes or names.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// The exact config bytes as stored (for one image, their sha256 is
        /// its ID); several images are separated by a newline.
        #[arg(long)]
        raw: bool,
    },
    /// Show an image's history, newest first.
    History {
        /// Image ID, unique ID prefix or name.
        id: String,
        /// Only the ID of the image each entry belongs to (`<missing>` when
        /// that image is not in the store).
        #[arg(long, short)]
        quiet: bool,
        /// Full IDs and whole commands.
        #[arg(long)]
        no_trunc: bool,
    },
    /// List the images whose ID starts with PREFIX.
    Search {
        /// Hex digits, with or without `sha256:`.
        prefix: String,
    },
    /// Remove images. A name is untagged first, and its image goes when no
    /// other name holds it. Refuses images with children unless --force.
    Rm {
        /// Image IDs, unique ID prefixes or names.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Remove images with children too; the children are orphaned.
        #[arg(long, short)]
        force: bool,
    },
    /// Give an image a name (`REPOSITORY[:TAG]`); a name another image had moves.
    Tag {
        /// Image ID, unique ID prefix or name.
        source: String,
        /// The new name.
        target: String,
    },
    /// Remove names; the images stay.
    Untag {
        /// Names to remove.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Show or set an image's parent.
    Parent {
        /// Image ID, unique ID prefix or name.
        id: String,
        /// The new parent (ID or unique prefix).
        #[arg(long, value_name = "PARENT")]
        set: Option<String>,
    },
    /// Remove dangling (or, with -a, all unused) images and the blobs nothing
    /// refers to, or evict least recently used images to a size. Never
    /// removes what a live lease holds.
    Prune(PruneArgs),
    /// Leases: what running builds and pulls hold, safe from rm and prune.
    Lease {
        /// What to do.
        #[command(subcommand)]
        command: LeaseCommand,
    },
    /// Read and verify every config, record, lease, blob and note; report
    /// every problem with its key (damaged blobs are evicted). Exits 1 when
    /// there are problems.
    Check,
    /// Give the space deletes freed back to the file system (a redb file's
    /// free pages); prune does this after removing anything.
    Compact,
    /// Disk usage of the store and the blob cache, and what prune could
    /// free; with -v, blobs by kind and compression and each backend's
    /// parts on disk (a second -v turns logging on).
    Df,
    /// The classic builder cache.
    Cache {
        /// What to do.
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// The blob cache.
    Blob {
        /// What to do.
        #[command(subcommand)]
        command: BlobCommand,
    },
    /// Sizes and counts of the store and the blob cache.
    Stats,
    /// Where the store is and what it holds.
    Info,
    /// Run the conformance suite against the store's backend, in fresh namespaces.
    Conformance(ConformanceArgs),
    /// Print a shell completion script: `source <(imagecache completions bash)`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `imagecache man | man -l -`.
    Man,
}

/// `prune`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  imagecache prune                           # dangling images and unreferenced blobs
  imagecache prune -a --until 24h -f         # every unused image older than a day, no prompt
  imagecache prune --keep-storage 10GiB      # least recently used first, down to 10 GiB
  imagecache prune -a --dry-run --format json")]
pub(crate) struct PruneArgs {
    /// Every unused image, named or not, rather than dangling ones.
    #[arg(long, short)]
    pub(crate) all: bool,
    /// Only images matching: `until=DURATION` (last used longer ago),
    /// `label=KEY[=VALUE]`, `label!=KEY[=VALUE]` (repeat for each).
    #[arg(long, value_name = "FILTER")]
    pub(crate) filter: Vec<String>,
    /// Only images last used before this time: RFC 3339, Unix seconds, or a
    /// duration ago (`90m`, `24h`, `7d`).
    #[arg(long, value_name = "TIME|DURATION")]
    pub(crate) until: Option<Until>,
    /// Evict the least recently used of the selected images until configs
    /// plus blobs fit in SIZE (`10GiB`, `512M`, bytes).
    #[arg(long, value_name = "SIZE")]
    pub(crate) keep_storage: Option<ByteSize>,
    /// Evict until the store's filesystem has SIZE free.
    #[arg(long, value_name = "SIZE")]
    pub(crate) min_free_space: Option<ByteSize>,
    /// Never bring the store below SIZE.
    #[arg(long, value_name = "SIZE")]
    pub(crate) reserved_space: Option<ByteSize>,
    /// Show what would be removed and why each item stays, remove nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Do not ask for confirmation on a terminal.
    #[arg(long, short)]
    pub(crate) force: bool,
}

/// `lease …`.
#[derive(Debug, Subcommand)]
pub(crate) enum LeaseCommand {
    /// List leases, live and expired.
    Ls,
    /// Create a lease holding images, layers or blobs; prints its ID.
    Create {
        /// Its ID; a random one when absent.
        #[arg(long)]
        id: Option<String>,
        /// How long it lives (`30m`, `24h`, `7d`).
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        ttl: Ttl,
        /// KEY=VALUE labels (repeat for each).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// What it holds: image IDs, prefixes or names, or
        /// `image:DIGEST`, `layer:CHAINID`, `blob:DIGEST`.
        #[arg(value_name = "RESOURCE")]
        resources: Vec<String>,
    },
    /// Delete leases.
    Rm {
        /// Lease IDs.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

/// `cache …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Ask the builder cache for a step; exits 1 on a miss.
    Lookup(LookupArgs),
}

/// `cache lookup`.
#[derive(Debug, Args)]
pub(crate) struct LookupArgs {
    /// The image the step runs on (ID or unique prefix); none for FROM scratch.
    #[arg(long, value_name = "ID")]
    pub(crate) parent: Option<String>,
    /// The probe as a container config JSON file (`{"Cmd": [...], "Env": [...]}`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["cmd", "env", "label", "workdir", "user", "expose", "entrypoint"])]
    pub(crate) config: Option<PathBuf>,
    /// One element of the probe's Cmd (repeat for each).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) cmd: Vec<String>,
    /// One element of the probe's Entrypoint (repeat for each).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) entrypoint: Vec<String>,
    /// KEY=VALUE for the probe's Env (repeat for each).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// KEY=VALUE for the probe's Labels (repeat for each).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) label: Vec<String>,
    /// The probe's WorkingDir.
    #[arg(long, value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// The probe's User.
    #[arg(long, value_name = "USER")]
    pub(crate) user: Option<String>,
    /// PORT[/PROTO] for the probe's ExposedPorts (repeat for each).
    #[arg(long, value_name = "PORT[/PROTO]")]
    pub(crate) expose: Vec<String>,
    /// The builder's platform.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", default_value = "linux/amd64")]
    pub(crate) platform: String,
    /// Images to match by history, as `docker build --cache-from` (IDs or unique prefixes).
    #[arg(long, value_name = "REF", num_args = 1..)]
    pub(crate) cache_from: Vec<String>,
}

/// `blob …`.
#[derive(Debug, Subcommand)]
pub(crate) enum BlobCommand {
    /// Whether a blob is cached (and looks whole); exits 1 if not.
    Has {
        /// The blob's digest.
        digest: Digest,
    },
    /// Write a cached blob, verified, to a file or stdout; exits 1 if not cached.
    Get {
        /// The blob's digest.
        digest: Digest,
        /// The file to write; stdout when absent.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Store a file as a blob; gzip and zstd layers are also kept decompressed.
    Put {
        /// The file.
        file: PathBuf,
        /// The digest the file must have; computed from the file when absent.
        #[arg(long)]
        digest: Option<Digest>,
        /// A media type to note beside the blob.
        #[arg(long, value_name = "TYPE")]
        media_type: Option<String>,
    },
    /// List cached blobs with their notes.
    Ls,
    /// Remove every cached blob.
    Clear,
}

/// `conformance`.
#[derive(Debug, Args)]
pub(crate) struct ConformanceArgs {
    /// Run only cases whose `group::name` contains this.
    #[arg(long, value_name = "SUBSTR")]
    pub(crate) filter: Option<String>,
    /// Seconds one case may run.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub(crate) timeout: u64,
}

fn parse_export_format(text: &str) -> Result<imagecache_transfer::ExportFormat, String> {
    text.parse()
}

impl BlobCommand {
    /// Whether the command changes the blob cache.
    pub(crate) fn writes(&self) -> bool {
        matches!(self, Self::Put { .. } | Self::Clear)
    }
}
