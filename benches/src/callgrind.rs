//! Instructions per request: Remora under `valgrind --tool=callgrind`, driven by an exact
//! request count. Two runs, with N and 2N requests, cancel start-up and shutdown: the
//! figure is (I(2N) - I(N)) / N. Instruction counts do not depend on what else the
//! machine is doing, so this is the repeatable number for tracking regressions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::gen::{self, Proto};
use crate::report::{Sample, Scenario};
use crate::targets::{self, Launch, Target};

pub fn available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Total instructions of one Remora process that served `n` HTTP/1.1 requests.
fn instructions(
    bin: &Path,
    cfg: &str,
    n: u64,
    cpus: (usize, usize),
    dir: &Path,
) -> Result<u64, String> {
    let out: PathBuf = dir.join(format!("callgrind.{n}.out"));
    let launch = Launch {
        name: "remora-callgrind",
        program: "valgrind".into(),
        prefix: vec![
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", out.display()),
            bin.display().to_string(),
        ],
        extra: Vec::new(),
        ready_timeout: Duration::from_secs(180),
    };
    let p = targets::start(&launch, cfg, cpus.0)?;
    let ok = gen::count(cpus.1, p.addrs.http1, Proto::Http1, n)?;
    if ok != n {
        return Err(format!("callgrind: {} of {n} requests failed", n - ok));
    }
    let status = p.stop(Duration::from_secs(120))?;
    if !status.success() {
        return Err(format!("remora under valgrind exited with {status}"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    parse_total(&text).ok_or_else(|| format!("{}: no instruction total", out.display()))
}

/// The `summary:` (or `totals:`) line of a callgrind output file: instructions (Ir).
fn parse_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Measures Remora's instructions per request with `n` requests per step. The output
/// files go to `keep` and stay there when it is given; otherwise they are deleted.
pub fn run(
    bin: &Path,
    cfg: &str,
    n: u64,
    cpus: (usize, usize),
    keep: Option<&Path>,
) -> Result<Sample, String> {
    let dir = match keep {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("remora-callgrind-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = (|| {
        let one = instructions(bin, cfg, n, cpus, &dir)?;
        let two = instructions(bin, cfg, 2 * n, cpus, &dir)?;
        Ok::<_, String>((one, two))
    })();
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (one, two) = result?;
    let mut s = Sample::new(
        Scenario::Callgrind,
        format!("http1, 1 connection, {n} vs {} requests", 2 * n),
        Target::Remora,
        0,
    );
    s.set(
        "instructions_per_request",
        two.saturating_sub(one) as f64 / n as f64,
    )
    .set("instructions_total_n", one as f64)
    .set("instructions_total_2n", two as f64);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_line() {
        let text =
            "version: 1\ncmd: remora\nevents: Ir\nfn=main\n1 5\nsummary: 123456\ntotals: 123456\n";
        assert_eq!(parse_total(text), Some(123456));
        assert_eq!(parse_total("events: Ir\n"), None);
    }
}
