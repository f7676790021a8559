//! The three targets: no proxy, Remora and Envoy, each proxy started as a process pinned
//! to its own core with an equivalent configuration.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bootstrap both proxies get: one listener forwarding everything to the upstream.
pub fn config(upstream: SocketAddr) -> String {
    bootstrap(
        r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: upstream}}]}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
"#,
        upstream,
    )
}

/// The same listener as a plain TCP relay (`tcp_proxy`): what forwarding costs with the
/// same four socket operations per request and next to no user-space work. A floor for
/// any proxy that uses kernel sockets, not a target.
pub fn tcp_floor_config(upstream: SocketAddr) -> String {
    bootstrap(
        r#"      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench
          cluster: upstream
"#,
        upstream,
    )
}

/// Admin, a listener `bench` with the given network filter, and the cluster `upstream`.
fn bootstrap(filter: &str, upstream: SocketAddr) -> String {
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
{filter}  clusters:
  - name: upstream
    connect_timeout: 1s
    load_assignment: {{cluster_name: upstream, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}}}]}}]}}
"#,
        ip = upstream.ip(),
        port = upstream.port()
    )
}

pub struct ProxyProc {
    pub child: Child,
    pub listener: SocketAddr,
    /// Time from spawn until `/ready` answered 200.
    pub ready_after: Duration,
    _dir: PathBuf,
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// Starts `bin` pinned to `cpu` with one worker and waits for `/ready`.
pub fn start(
    name: &str,
    bin: &Path,
    cfg: &str,
    cpu: usize,
    extra: &[&str],
) -> Result<ProxyProc, String> {
    let dir = std::env::temp_dir().join(format!("remora-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cfg_path = dir.join("config.yaml");
    std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
    let admin_path = dir.join("admin");
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(&cfg_path)
        .arg("--admin-address-path")
        .arg(&admin_path);
    cmd.args(["--concurrency", "1", "-l", "error"]).args(extra);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    pin(&mut cmd, cpu);
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
    let deadline = t0 + Duration::from_secs(30);
    let admin: SocketAddr = loop {
        if let Some(a) = std::fs::read_to_string(&admin_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            if get(a, "/ready").is_some_and(|(c, _)| c == 200) {
                break a;
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("{name} exited: {st}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("{name} not ready in 30s"));
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let ready_after = t0.elapsed();
    // Text form, the same from both proxies: `name::ip:port` per line.
    let (_, body) = get(admin, "/listeners").ok_or("no /listeners")?;
    let listener = body
        .lines()
        .find_map(|l| l.strip_prefix("bench::"))
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| format!("no bench listener in /listeners: {body}"))?;
    Ok(ProxyProc {
        child,
        listener,
        ready_after,
        _dir: dir,
    })
}

/// A blocking admin GET: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.get(9..12)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((code, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
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

/// `target/release/remora`, built first so the numbers are for the current tree.
pub fn remora_bin() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = workspace_root();
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "remora"])
        .current_dir(&root)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("cargo build --release -p remora failed".into());
    }
    Ok(root.join("target/release/remora"))
}

/// Envoy from `.venv` (installed by scripts/setup-test-deps.sh, which this runs).
pub fn envoy_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = workspace_root();
    let status = Command::new(root.join("scripts/setup-test-deps.sh"))
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("scripts/setup-test-deps.sh failed".into());
    }
    let lib = root.join(".venv/lib");
    std::fs::read_dir(&lib)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.exists())
        .ok_or_else(|| "Envoy not found in .venv".to_string())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// HAProxy as a reference point (not a target of the comparison): started only when the
/// `haproxy` binary is installed, pinned like the proxies, one thread, keep-alive reuse.
pub fn start_haproxy(upstream: SocketAddr, cpu: usize) -> Result<Option<ProxyProc>, String> {
    let Some(bin) = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        return Ok(None);
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let dir = std::env::temp_dir().join(format!("remora-bench-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cfg = format!(
        "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 {upstream}\n"
    );
    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&bin);
    cmd.arg("-f")
        .arg(&cfg_path)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    pin(&mut cmd, cpu);
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
    let listener: SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    while std::net::TcpStream::connect(listener).is_err() {
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if exited || t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            return Err(format!(
                "haproxy did not start (its config is kept for checking: haproxy -c -f {})",
                cfg_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Some(ProxyProc {
        child,
        listener,
        ready_after: t0.elapsed(),
        _dir: dir,
    }))
}

fn pin(cmd: &mut Command, cpu: usize) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
}
