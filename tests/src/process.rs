//! Proxies as real processes: the `remora` binary and Envoy, each started on a config
//! file with `--admin-address-path` so ephemeral ports can be found, and killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `remora` binary built alongside these tests.
pub fn remora_bin() -> PathBuf {
    workspace_bin("remora", "proxy")
}

/// The `iptables-init` binary built alongside these tests.
pub fn iptables_init_bin() -> PathBuf {
    workspace_bin("iptables-init", "iptables-init")
}

/// A binary of the workspace in this test's target directory, refused when older than
/// its crate's sources.
fn workspace_bin(name: &str, crate_dir: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    let hint = format!("build it with `cargo build -p {name}`, or run `cargo test --workspace`");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{name} binary not found at {} ({hint})", bin.display()));
    // `cargo test -p tests` alone does not rebuild the binary: refuse to test a stale one.
    let src = crate::workspace_root().join(crate_dir).join("src");
    if let Some(newest) = newest_mtime(&src) {
        assert!(
            built >= newest,
            "{} is older than the sources in {} ({hint})",
            bin.display(),
            src.display()
        );
    }
    bin
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if p.is_dir() {
                newest_mtime(&p)
            } else {
                e.metadata().and_then(|m| m.modified()).ok()
            }
        })
        .max()
}

/// A running proxy process.
pub struct ProxyProcess {
    pub child: Child,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
    pub stderr_path: PathBuf,
    /// The network namespace it runs in (admin requests are made from inside it).
    netns: Option<String>,
}

impl ProxyProcess {
    /// Starts `bin` with `-c <config>` plus `args`, and waits until `/ready` says LIVE.
    pub fn start(bin: &Path, config_yaml: &str, args: &[&str]) -> ProxyProcess {
        Self::start_with(Command::new(bin), None, bin, config_yaml, args)
    }

    /// Starts `bin` inside network namespace `netns` as `uid` (its iptables owner, as a
    /// sidecar runs) keeping capabilities `caps` (e.g. `net_admin`, which TPROXY's
    /// transparent sockets need), and waits until `/ready` says LIVE.
    pub fn start_in_netns(
        netns: &str,
        uid: u32,
        caps: &[&str],
        bin: &Path,
        config_yaml: &str,
        args: &[&str],
    ) -> ProxyProcess {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "setpriv"])
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups");
        if !caps.is_empty() {
            let add: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
            cmd.arg(format!("--inh-caps={}", add.join(",")))
                .arg(format!("--ambient-caps={}", add.join(",")));
        }
        cmd.arg(bin);
        Self::start_with(cmd, Some(netns.to_owned()), bin, config_yaml, args)
    }

    fn start_with(
        mut cmd: Command,
        netns: Option<String>,
        bin: &Path,
        config_yaml: &str,
        args: &[&str],
    ) -> ProxyProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        // A proxy started as another user must read its config and write beside it.
        let all = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        let _ = std::fs::set_permissions(dir.path(), all);
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, config_yaml).expect("write config");
        let admin_path = dir.path().join("admin-address");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = cmd
            .arg("-c")
            .arg(&cfg)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut p = ProxyProcess {
            child,
            admin: "127.0.0.1:0".parse().expect("addr"),
            _dir: dir,
            stderr_path,
            netns,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{} exited early ({status}):\n{}", bin.display(), p.stderr());
            }
            if let Some(a) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                p.admin = a;
                if p.try_admin("/ready").is_some_and(|(code, _)| code == 200) {
                    return p;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become ready:\n{}",
                bin.display(),
                p.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `GET` on the admin API: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        self.try_admin(path)
            .unwrap_or_else(|| panic!("admin {path} did not answer"))
    }

    fn try_admin(&self, path: &str) -> Option<(u16, String)> {
        let addr = self.admin;
        match &self.netns {
            None => admin_get(addr, path),
            Some(ns) => {
                let path = path.to_owned();
                crate::netns::in_netns(ns, move || admin_get(addr, &path))
            }
        }
    }

    /// A counter or gauge from `/stats` (0 when absent).
    pub fn stat(&self, name: &str) -> u64 {
        stat_in(&self.admin_get("/stats").1, name)
    }

    /// A listener's bound address, from `/listeners?format=json`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        let (_, body) = self.admin_get("/listeners?format=json");
        let v: serde_json::Value = serde_json::from_str(&body).expect("listeners json");
        let l = v["listener_statuses"]
            .as_array()
            .and_then(|a| a.iter().find(|l| l["name"] == name))
            .unwrap_or_else(|| panic!("no listener {name} in {body}"));
        let sa = &l["local_address"]["socket_address"];
        format!(
            "{}:{}",
            sa["address"].as_str().unwrap_or(""),
            sa["port_value"]
        )
        .parse()
        .expect("listener address")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP/1.1 request to an admin endpoint (`GET` unless the path starts with
/// `POST `).
pub fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let (method, path) = match path.strip_prefix("POST ") {
        Some(p) => ("POST", p),
        None => ("GET", path),
    };
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.get(9..12)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Admin answers are small: decode a chunked body if needed.
    Some((code, dechunk(&out, body)))
}

fn dechunk(head: &str, body: String) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body;
    }
    let mut out = String::new();
    let mut rest = body.as_str();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Envoy 1.40 and Remora started on the same config, one worker each (Envoy first):
/// the pair every differential test compares.
pub async fn start_envoy_and_remora(cfg: &str) -> (ProxyProcess, ProxyProcess) {
    let (c1, c2) = (cfg.to_owned(), cfg.to_owned());
    let envoy = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(
            &crate::envoy::envoy_bin(),
            &c1,
            &["--concurrency", "1", "-l", "error", "--disable-hot-restart"],
        )
    })
    .await
    .expect("envoy started");
    let remora = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(&remora_bin(), &c2, &["--concurrency", "1", "-l", "error"])
    })
    .await
    .expect("remora started");
    (envoy, remora)
}

/// A counter or gauge from the text of `/stats` (`name: value` lines; 0 when absent).
pub fn stat_in(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Polls a stat until it reads `want` (true) or 5 s pass (false).
pub async fn wait_for_stat(p: &ProxyProcess, name: &str, want: u64) -> bool {
    for _ in 0..100 {
        let admin = p.admin;
        let name = name.to_owned();
        let v = tokio::task::spawn_blocking(move || {
            admin_get(admin, "/stats").map(|(_, body)| stat_in(&body, &name))
        })
        .await
        .expect("stats");
        if v == Some(want) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// Arguments for a proxy whose access log a test reads: one worker, quiet, the log
/// flushed every 50 ms (Envoy needs `--disable-hot-restart`; Remora accepts it).
pub const ACCESS_LOG_ARGS: &[&str] = &[
    "--concurrency",
    "1",
    "-l",
    "error",
    "--file-flush-interval-msec",
    "50",
    "--disable-hot-restart",
];
