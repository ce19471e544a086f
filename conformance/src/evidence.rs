//! Summary lines of the project's evidence harnesses (kill loop, model
//! test, tamper matrix, fuzz replay, bad inputs, S3 cluster).
//!
//! Each harness ends with one line per run,
//!
//! ```text
//! evidence: <harness> key=value key=value ...
//! ```
//!
//! printed on stdout and, when `IMAGECACHE_EVIDENCE_FILE` names a file,
//! appended to it, so `scripts/evidence.sh` can gather the figures of a
//! whole test run (where cargo hides what passing tests print) into one
//! table. A harness of your own can report through [`record`] too.

use std::fmt::Display;
use std::io::Write as _;

/// The environment variable naming the file summary lines are appended to.
pub const EVIDENCE_FILE_ENV: &str = "IMAGECACHE_EVIDENCE_FILE";

/// Formats one summary line: `evidence: <harness> k=v ...`.
///
/// Keys and values must not contain spaces; a space or newline in either is
/// replaced by `_` so the line stays one record.
pub fn line(harness: &str, fields: &[(&str, &dyn Display)]) -> String {
    let mut out = format!("evidence: {}", word(harness));
    for (key, value) in fields {
        out.push(' ');
        out.push_str(&word(key));
        out.push('=');
        out.push_str(&word(&value.to_string()));
    }
    out
}

/// Prints a summary line and appends it to the file named by
/// [`EVIDENCE_FILE_ENV`], if set. A file that cannot be written is reported
/// on stderr and otherwise ignored: the figures are still on stdout.
pub fn record(harness: &str, fields: &[(&str, &dyn Display)]) {
    let line = line(harness, fields);
    println!("{line}");
    let Some(path) = std::env::var_os(EVIDENCE_FILE_ENV) else {
        return;
    };
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = appended {
        eprintln!(
            "evidence: cannot append to {}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

fn word(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_keeps_one_record_per_line() {
        let kills = 12;
        let line = line("kill", &[("backend", &"fs x"), ("kills", &kills)]);
        assert_eq!(line, "evidence: kill backend=fs_x kills=12");
    }
}
