//! Driving the cache the way Docker's classic builder does.
//!
//! The builder does not look up "a Dockerfile line": it builds a *probe*
//! config — the stage's running config with `Cmd` replaced by a text that
//! stands for the step — and asks the cache for an image whose
//! `container_config` compares equal. The functions here build those `Cmd`
//! forms exactly as the builder does, and [`Stage`] replays its control flow:
//! probe, use the cached image on a hit, commit a new image on a miss, and
//! after the first miss in a stage stop asking.

use std::collections::BTreeMap;
use std::sync::Arc;

use imagecache_core::{
    ChildConfig, ContainerConfig, DiffId, ImageConfig, ImageId, Platform, Timestamp,
};
use imagecache_store::{CreateOptions, Store};

use crate::classic::ImageCache;
use crate::error::{Error, Result};

/// The shell the Linux builder uses: `["/bin/sh", "-c"]`.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_owned(), "-c".to_owned()]
}

/// The probe `Cmd` of a metadata instruction (ENV, LABEL, EXPOSE, CMD,
/// ENTRYPOINT, USER, MAINTAINER, …): the shell, then `"#(nop) "`, then the
/// instruction text, e.g. `["/bin/sh","-c","#(nop) ","ENV FOO=bar"]`.
pub fn nop_cmd(shell: &[String], instruction: &str) -> Vec<String> {
    let mut cmd = shell.to_vec();
    cmd.push("#(nop) ".to_owned());
    cmd.push(instruction.to_owned());
    cmd
}

/// The probe `Cmd` of COPY, ADD and WORKDIR, which keep an older single
/// argument form: `["/bin/sh","-c","#(nop) COPY …"]`.
pub fn nop_cmd_joined(shell: &[String], instruction: &str) -> Vec<String> {
    let mut cmd = shell.to_vec();
    cmd.push(format!("#(nop) {instruction}"));
    cmd
}

/// The probe `Cmd` of a shell-form RUN. When build arguments are used, it
/// is prefixed with `|<n>` and the sorted `KEY=value` pairs, which is how a
/// changed build argument invalidates the step.
pub fn run_cmd(
    shell: &[String],
    command: &str,
    build_args: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut cmd = Vec::with_capacity(build_args.len() + shell.len() + 2);
    if !build_args.is_empty() {
        cmd.push(format!("|{}", build_args.len()));
        cmd.extend(build_args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    cmd.extend(shell.iter().cloned());
    cmd.push(command.to_owned());
    cmd
}

/// Cleans a WORKDIR path as the builder does (`/foo/` and `/foo/./` are `/foo`),
/// resolving it against the current one when relative.
pub fn clean_workdir(current: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", if current.is_empty() { "/" } else { current })
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A list as Go's `%q` prints a `[]string`: `["a" "b"]`.
fn go_quoted(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(" "))
}

/// One Dockerfile instruction after its arguments are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// `ENV key=value`.
    Env(String, String),
    /// `LABEL key=value …`; pairs are written in the order given.
    Label(Vec<(String, String)>),
    /// `EXPOSE port/proto`.
    Expose(String),
    /// `USER name`.
    User(String),
    /// `WORKDIR path`.
    Workdir(String),
    /// `CMD [..]` (exec form).
    Cmd(Vec<String>),
    /// `ENTRYPOINT [..]` (exec form).
    Entrypoint(Vec<String>),
    /// `MAINTAINER name`.
    Maintainer(String),
    /// `COPY`/`ADD`: the builder's text names the content by its hash
    /// (e.g. `file:<sha256> in /dst`), so changed content misses.
    Copy {
        /// The text after `COPY `, e.g. `file:abc… in /app`.
        source: String,
        /// The layer the copy produces.
        diff_id: Option<DiffId>,
    },
    /// A shell-form `RUN`.
    Run {
        /// The command.
        command: String,
        /// The build arguments the command uses.
        build_args: BTreeMap<String, String>,
        /// The layer the command produces, `None` if it changed no file.
        diff_id: Option<DiffId>,
    },
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The cache had the step: the stage moved to this image.
    Cached(ImageId),
    /// The step was committed as this new image.
    Built(ImageId),
}

impl StepOutcome {
    /// The image the stage is at after the step.
    pub fn id(&self) -> ImageId {
        match self {
            Self::Cached(id) | Self::Built(id) => *id,
        }
    }

    /// Whether the cache answered.
    pub fn is_cached(&self) -> bool {
        matches!(self, Self::Cached(_))
    }
}

/// One build stage: a `FROM` and the steps after it.
#[derive(Debug)]
pub struct Stage {
    store: Store,
    cache: Arc<dyn ImageCache>,
    platform: Platform,
    shell: Vec<String>,
    image: Option<ImageId>,
    parent_config: Option<Arc<imagecache_core::Image>>,
    run_config: ContainerConfig,
    busted: bool,
    no_cache: bool,
}

impl Stage {
    /// Starts a stage `FROM base` (`None`: `FROM scratch`). Every stage
    /// starts with a fresh cache answer, as the builder resets its prober
    /// at each `FROM`.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] when `base` is not in the store.
    pub async fn from(
        store: Store,
        cache: Arc<dyn ImageCache>,
        base: Option<ImageId>,
        platform: Platform,
    ) -> Result<Self> {
        let parent_config = match base {
            Some(id) => Some(
                store
                    .get(&id)
                    .await
                    .map_err(|source| Error::UnknownImage { id, source })?,
            ),
            None => None,
        };
        let run_config = parent_config
            .as_ref()
            .and_then(|p| p.config.clone())
            .unwrap_or_default();
        Ok(Self {
            store,
            cache,
            platform,
            shell: default_shell(),
            image: base,
            parent_config,
            run_config,
            busted: false,
            no_cache: false,
        })
    }

    /// Never asks the cache (`docker build --no-cache`).
    pub fn with_no_cache(mut self, no_cache: bool) -> Self {
        self.no_cache = no_cache;
        self
    }

    /// The image the stage is at.
    pub fn image(&self) -> Option<ImageId> {
        self.image
    }

    /// Runs one step: the probe, then the cached image or a new commit.
    ///
    /// # Errors
    /// Store and cache failures; a miss is not one.
    pub async fn step(&mut self, step: Step) -> Result<StepOutcome> {
        let mut next = self.run_config.clone();
        let (probe_cmd, diff_id) = self.apply(&step, &mut next);
        // The probe is the new run config with Cmd standing for the step; a
        // RUN also clears the entrypoint, since the command is non-empty.
        let mut probe = next.clone();
        probe.cmd = Some(probe_cmd);
        if matches!(step, Step::Run { .. }) {
            probe.entrypoint = None;
        }

        if !self.no_cache && !self.busted {
            if let Some(hit) = self
                .cache
                .get_cache(self.image.as_ref(), Some(&probe), &self.platform)
                .await?
            {
                self.advance(hit, next).await?;
                return Ok(StepOutcome::Cached(hit));
            }
            self.busted = true;
        }
        let id = self.commit(probe, next.clone(), diff_id).await?;
        self.advance(id, next).await?;
        Ok(StepOutcome::Built(id))
    }

    /// Applies `step` to the run config `next`; returns the command that
    /// stands for the step in the probe, and the layer it adds.
    fn apply(&self, step: &Step, next: &mut ContainerConfig) -> (Vec<String>, Option<DiffId>) {
        let shell = &self.shell;
        match step {
            Step::Env(k, v) => {
                let env = next.env.get_or_insert_with(Vec::new);
                let prefix = format!("{k}=");
                env.retain(|e| !e.starts_with(&prefix));
                env.push(format!("{k}={v}"));
                (nop_cmd(shell, &format!("ENV {k}={v}")), None)
            }
            Step::Label(pairs) => {
                let labels = next.labels.get_or_insert_with(BTreeMap::new);
                let mut text = "LABEL".to_owned();
                for (k, v) in pairs {
                    labels.insert(k.clone(), v.clone());
                    text.push_str(&format!(" {k}={v}"));
                }
                (nop_cmd(shell, &text), None)
            }
            Step::Expose(port) => {
                next.exposed_ports.insert(port.clone());
                (nop_cmd(shell, &format!("EXPOSE {port}")), None)
            }
            Step::User(user) => {
                next.user = user.clone();
                (nop_cmd(shell, &format!("USER {user}")), None)
            }
            Step::Workdir(path) => {
                next.working_dir = clean_workdir(&next.working_dir, path);
                let text = format!("WORKDIR {}", next.working_dir);
                (nop_cmd_joined(shell, &text), None)
            }
            Step::Cmd(cmd) => {
                next.cmd = Some(cmd.clone());
                (nop_cmd(shell, &format!("CMD {}", go_quoted(cmd))), None)
            }
            Step::Entrypoint(ep) => {
                next.entrypoint = Some(ep.clone());
                (
                    nop_cmd(shell, &format!("ENTRYPOINT {}", go_quoted(ep))),
                    None,
                )
            }
            Step::Maintainer(name) => (nop_cmd(shell, &format!("MAINTAINER {name}")), None),
            Step::Copy { source, diff_id } => {
                (nop_cmd_joined(shell, &format!("COPY {source}")), *diff_id)
            }
            Step::Run {
                command,
                build_args,
                diff_id,
            } => (run_cmd(shell, command, build_args), *diff_id),
        }
    }

    /// Stores the image a step builds on the stage's image.
    async fn commit(
        &self,
        probe: ContainerConfig,
        next: ContainerConfig,
        diff_id: Option<DiffId>,
    ) -> Result<ImageId> {
        let child = ChildConfig {
            author: String::new(),
            comment: String::new(),
            diff_id,
            container_config: probe,
            config: Some(next),
            created: Timestamp::now_utc(),
        };
        let mut config = ImageConfig::new_child(
            self.parent_config.as_deref().map(|i| &**i),
            child,
            &self.platform.os,
        );
        config.architecture = self.platform.architecture.clone();
        config.variant = self.platform.variant.clone();
        let mut options = CreateOptions::new().with_built_locally(true);
        if let Some(parent) = self.image {
            options = options.with_parent(parent);
        }
        Ok(self
            .store
            .create_with(config.to_json_sorted(), options)
            .await?)
    }

    /// Moves the stage to `id`, whose run config is `next`.
    async fn advance(&mut self, id: ImageId, next: ContainerConfig) -> Result<()> {
        self.image = Some(id);
        self.parent_config = Some(self.store.get(&id).await?);
        self.run_config = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_forms_match_the_builder() {
        let sh = default_shell();
        assert_eq!(
            nop_cmd(&sh, "ENV FOO=bar"),
            ["/bin/sh", "-c", "#(nop) ", "ENV FOO=bar"]
        );
        assert_eq!(
            nop_cmd_joined(&sh, "COPY file:abc in /"),
            ["/bin/sh", "-c", "#(nop) COPY file:abc in /"]
        );
        let mut args = BTreeMap::new();
        assert_eq!(run_cmd(&sh, "make", &args), ["/bin/sh", "-c", "make"]);
        args.insert("B".to_owned(), "2".to_owned());
        args.insert("A".to_owned(), "1".to_owned());
        assert_eq!(
            run_cmd(&sh, "make", &args),
            ["|2", "A=1", "B=2", "/bin/sh", "-c", "make"]
        );
    }

    #[test]
    fn workdir_is_cleaned() {
        assert_eq!(clean_workdir("", "/foo/"), "/foo");
        assert_eq!(clean_workdir("/foo", "bar/../baz/."), "/foo/baz");
        assert_eq!(clean_workdir("", "/"), "/");
    }
}
