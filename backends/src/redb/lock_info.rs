//! The advisory sidecar file that names the process holding a database.
//!
//! redb locks the database file itself, which is what keeps a second writer
//! out; but a lock says nothing about who holds it. So that a refused open
//! can name the holder, the process that opened the database writes
//! `<path>.lock-info` (pid, host, time of opening) and removes it when it
//! closes. The file is information only: it is never consulted to decide
//! whether the database may be opened, a stale one (left by a crash) is
//! simply overwritten, and failing to write or remove it is not an error.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use imagecache_core::Timestamp;

/// The sidecar path for a database path: the file name plus `.lock-info`.
pub(super) fn sidecar_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".lock-info");
    PathBuf::from(name)
}

/// What this process wrote into the sidecar, kept to remove exactly that.
#[derive(Debug)]
pub(super) struct LockInfo {
    path: PathBuf,
    text: String,
}

impl LockInfo {
    /// Writes the sidecar for a database this process has just opened.
    ///
    /// # Errors
    /// The I/O error, which the caller only logs.
    pub(super) fn write(db_path: &Path) -> io::Result<Self> {
        let text = format!(
            "pid={}\nhost={}\nsince={}\n",
            std::process::id(),
            hostname(),
            Timestamp::now_utc().to_rfc3339_nano(),
        );
        let path = sidecar_path(db_path);
        fs::write(&path, &text)?;
        Ok(Self { path, text })
    }

    /// Removes the sidecar unless another process has replaced it since.
    pub(super) fn remove(&self) {
        let ours = fs::read_to_string(&self.path).is_ok_and(|now| now == self.text);
        if ours && let Err(err) = fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %err, "cannot remove lock information");
        }
    }
}

/// Describes the holder of a database, from its sidecar if there is one.
pub(super) fn describe_holder(db_path: &Path) -> String {
    let path = sidecar_path(db_path);
    let Ok(text) = fs::read_to_string(&path) else {
        return format!(
            "another handle or process (no lock information in {})",
            path.display()
        );
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let pid = field("pid").unwrap_or("?");
    let host = field("host").unwrap_or("an unknown host");
    let since = field("since").unwrap_or("an unknown time");
    let this = pid == std::process::id().to_string() && host == hostname();
    if this {
        format!("another handle in this process (pid {pid} on {host}, open since {since})")
    } else {
        format!(
            "pid {pid} on {host}, open since {since} (as recorded in {})",
            path.display()
        )
    }
}

/// The machine's host name, as far as it can be told without a system call
/// wrapper.
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| fs::read_to_string("/etc/hostname").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_is_described_from_the_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.redb");
        assert!(describe_holder(&db).contains("no lock information"));

        fs::write(
            sidecar_path(&db),
            "pid=4242\nhost=builder-7\nsince=2026-01-02T03:04:05Z\n",
        )
        .unwrap();
        let holder = describe_holder(&db);
        assert!(holder.contains("pid 4242 on builder-7"), "{holder}");
        assert!(holder.contains("2026-01-02T03:04:05Z"), "{holder}");
    }

    #[test]
    fn remove_leaves_a_sidecar_someone_else_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.redb");
        let info = LockInfo::write(&db).unwrap();
        let holder = describe_holder(&db);
        assert!(holder.contains("this process"), "{holder}");

        fs::write(sidecar_path(&db), "pid=1\nhost=elsewhere\n").unwrap();
        info.remove();
        assert!(sidecar_path(&db).exists());

        let info = LockInfo::write(&db).unwrap();
        info.remove();
        assert!(!sidecar_path(&db).exists());
    }
}
