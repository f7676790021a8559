//! Running `iptables`, `iptables-save`, `iptables-restore` (and the `ip6tables` ones), with
//! their failures turned into errors that say what to do: install iptables, run with
//! privilege, or which line the kernel refused.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    pub fn save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    pub fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "{tool} was not found in PATH: install the {} package first",
        package(tool)
    )]
    Missing { tool: &'static str },
    #[error(
        "{tool} was refused: permission denied (run as root or with CAP_NET_ADMIN and CAP_NET_RAW)"
    )]
    Permission { tool: &'static str },
    #[error("{tool} failed to start: {source}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The Debian/Ubuntu package that provides `tool`.
fn package(tool: &str) -> &'static str {
    if tool.starts_with("iptables") || tool.starts_with("ip6tables") {
        "iptables"
    } else {
        "iproute2"
    }
}

/// Runs `tool args...` with `stdin`, returning its standard output.
pub fn run(tool: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, ToolError> {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ToolError::Missing { tool },
        std::io::ErrorKind::PermissionDenied => ToolError::Permission { tool },
        _ => ToolError::Spawn { tool, source: e },
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits early closes the pipe; its status says why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ToolError::Spawn { tool, source: e })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("permission denied") || lower.contains("must be root") {
        return Err(ToolError::Permission { tool });
    }
    Err(ToolError::Failed {
        tool,
        status: out.status,
        stderr,
    })
}

/// The current rules of `family` (`iptables-save`).
pub fn save(family: Family) -> Result<String, ToolError> {
    run(family.save(), &[], None)
}

/// Applies `payload` on top of the current rules (`iptables-restore --noflush`).
pub fn restore_noflush(family: Family, payload: &str) -> Result<(), ToolError> {
    run(family.restore(), &["--noflush"], Some(payload)).map(drop)
}

/// Replaces whole tables with `saved` (`iptables-restore`), as a rollback does.
pub fn restore_tables(family: Family, saved: &str) -> Result<(), ToolError> {
    run(family.restore(), &[], Some(saved)).map(drop)
}

/// Whether `chain` in `table` holds a rule with exactly `params` (`iptables -C`).
pub fn exists(family: Family, table: &str, chain: &str, params: &[String]) -> bool {
    let mut args = vec!["-t", table, "-C", chain];
    args.extend(params.iter().map(String::as_str));
    run(family.iptables(), &args, None).is_ok()
}
