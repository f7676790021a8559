//! The three targets (no proxy, Remora, Envoy), their common configuration, and starting
//! a proxy as a process pinned to its own core.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::process::admin_get;
use tests::workspace_root;

use crate::upstream::Upstreams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Target {
    #[serde(rename = "no proxy")]
    Direct,
    #[serde(rename = "remora")]
    Remora,
    #[serde(rename = "envoy")]
    Envoy,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Direct, Target::Remora, Target::Envoy];

    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "no proxy",
            Target::Remora => "remora",
            Target::Envoy => "envoy",
        }
    }
}

/// Where a target accepts each kind of traffic.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// HTTP/1.1 to an HTTP/1.1 upstream.
    pub http1: SocketAddr,
    /// HTTP/2 and gRPC to an HTTP/2 upstream.
    pub http2: SocketAddr,
    /// TCP relayed by `tcp_proxy`.
    pub tcp: SocketAddr,
    /// HTTP/1.1 to the HTTP/1.1 upstream through the resilience features.
    pub resilient: SocketAddr,
    /// HTTP/1.1 relayed as bytes by `tcp_proxy` to the HTTP/1.1 upstream.
    pub relay: SocketAddr,
}

impl Addrs {
    pub fn direct(up: &Upstreams) -> Addrs {
        Addrs {
            http1: up.http,
            http2: up.http,
            tcp: up.tcp,
            resilient: up.http,
            relay: up.http,
        }
    }
}

/// The bootstrap both proxies get, byte for byte: listeners `http1`, `http2`, `tcp`,
/// `resilient` and `relay` on ephemeral ports, each forwarding to its own cluster (`relay`,
/// a `tcp_proxy`, to `http1`'s: HTTP/1.1 carried as bytes). `resilient` is
/// `http1` with what Istio's DestinationRule and VirtualService resilience settings turn
/// into: a retry policy with a per-try timeout, circuit breakers, outlier detection and
/// least-request balancing (nothing fails, so nothing fires).
pub fn config(up: &Upstreams) -> String {
    let hcm = |cluster: &str| {
        format!(
            r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {cluster}
          route_config:
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: {cluster}}}}}]}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
        )
    };
    let tcp_proxy = |cluster: &str| {
        format!(
            r#"      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {cluster}
          cluster: {cluster}
"#
        )
    };
    let listener = |name: &str, filter: &str| {
        format!(
            "  - name: {name}\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    filter_chains:\n    - filters:\n{filter}"
        )
    };
    let cluster = |name: &str, addr: SocketAddr, extra: &str| {
        format!(
            "  - name: {name}\n    connect_timeout: 1s\n{extra}    load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]}}\n",
            addr.ip(),
            addr.port()
        )
    };
    let resilient_hcm = r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: resilient
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route:
                  cluster: resilient
                  timeout: 10s
                  retry_policy: {retry_on: "5xx,reset,connect-failure,retriable-status-codes", retriable_status_codes: [503], num_retries: 2, per_try_timeout: 5s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
"#;
    let resilient = r#"    lb_policy: LEAST_REQUEST
    circuit_breakers:
      thresholds:
      - {max_connections: 100000, max_pending_requests: 100000, max_requests: 100000, max_retries: 100, track_remaining: true}
    outlier_detection: {consecutive_5xx: 5, interval: 1s, base_ejection_time: 30s, max_ejection_percent: 50}
"#;
    let h2 = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"#;
    format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\nstatic_resources:\n  listeners:\n{}{}{}{}{}  clusters:\n{}{}{}{}",
        listener("http1", &hcm("http1")),
        listener("http2", &hcm("http2")),
        listener("tcp", &tcp_proxy("tcp")),
        listener("resilient", resilient_hcm),
        listener("relay", &tcp_proxy("http1")),
        cluster("http1", up.http, ""),
        cluster("http2", up.http, h2),
        cluster("tcp", up.tcp, ""),
        cluster("resilient", up.http, resilient),
    )
}

pub struct ProxyProc {
    pub child: Child,
    pub addrs: Addrs,
    pub admin: SocketAddr,
    /// Time from spawn until `/ready` answered 200.
    pub ready_after: Duration,
    /// `VmRSS` 200 ms after ready, before any traffic, in KiB.
    pub idle_rss_kib: u64,
    dir: PathBuf,
    /// The network namespace it runs in, when not this process's.
    netns: Option<String>,
}

impl ProxyProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path` on its admin API: (status, body).
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        admin_in(self.netns.as_deref(), self.admin, path)
    }

    /// Asks the proxy to exit (SIGTERM) and waits up to `timeout` before killing it.
    pub fn stop(mut self, timeout: Duration) -> Result<std::process::ExitStatus, String> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Ok(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return Err("the proxy did not exit after SIGTERM".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How to launch a proxy: the program and the arguments before the proxy's own (a
/// wrapper such as valgrind goes here).
pub struct Launch {
    pub name: &'static str,
    pub program: PathBuf,
    pub prefix: Vec<String>,
    pub extra: Vec<String>,
    pub ready_timeout: Duration,
}

impl Launch {
    pub fn remora(bin: &Path) -> Launch {
        Launch {
            name: "remora",
            program: bin.to_path_buf(),
            prefix: Vec::new(),
            extra: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }

    pub fn envoy(bin: &Path) -> Launch {
        Launch {
            name: "envoy",
            program: bin.to_path_buf(),
            prefix: Vec::new(),
            extra: vec!["--disable-hot-restart".into()],
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// Starts a proxy pinned to `cpu` with one worker, waits for `/ready` and reads its
/// listeners' addresses from `/listeners`.
pub fn start(launch: &Launch, cfg: &str, cpu: usize) -> Result<ProxyProc, String> {
    let mut p = spawn(launch, cfg, cpu)?;
    let listeners = listeners(launch.name, p.admin)?;
    let find = |n: &str| {
        listeners
            .get(n)
            .copied()
            .ok_or_else(|| format!("{}: no listener {n} in /listeners", launch.name))
    };
    p.addrs = Addrs {
        http1: find("http1")?,
        http2: find("http2")?,
        tcp: find("tcp")?,
        resilient: find("resilient")?,
        relay: find("relay")?,
    };
    std::thread::sleep(Duration::from_millis(200));
    p.idle_rss_kib = crate::procstat::memory_kib(p.pid()).0;
    Ok(p)
}

/// The proxy's listeners by name, from `/listeners` (text form, the same from both
/// proxies: `name::ip:port` per line).
pub fn listeners(name: &str, admin: SocketAddr) -> Result<HashMap<String, SocketAddr>, String> {
    let (_, body) = admin_get(admin, "/listeners")
        .ok_or_else(|| format!("{name}: no answer from /listeners"))?;
    Ok(body
        .lines()
        .filter_map(|l| l.split_once("::"))
        .filter_map(|(n, a)| Some((n.to_string(), a.trim().parse().ok()?)))
        .collect())
}

/// A proxy run the way a sidecar runs: inside the pod's network namespace, as the user
/// iptables exempts from capture.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub netns: String,
    pub uid: u32,
}

/// `GET path` on an admin API, from inside `netns` when given.
fn admin_in(netns: Option<&str>, admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    match netns {
        None => admin_get(admin, path),
        Some(ns) => {
            let path = path.to_owned();
            tests::netns::in_netns(ns, move || admin_get(admin, &path))
        }
    }
}

/// Starts a proxy pinned to `cpu` with one worker on `cfg` and waits until `/ready`
/// answers 200 (listener addresses are left unset).
pub fn spawn(launch: &Launch, cfg: &str, cpu: usize) -> Result<ProxyProc, String> {
    spawn_in(launch, cfg, cpu, None)
}

/// [`spawn`], in `sandbox` when given.
pub fn spawn_in(
    launch: &Launch,
    cfg: &str,
    cpu: usize,
    sandbox: Option<&Sandbox>,
) -> Result<ProxyProc, String> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = launch.name;
    let dir =
        std::env::temp_dir().join(format!("remora-bench-{name}-{}-{seq}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cfg_path = dir.join("config.yaml");
    std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
    if sandbox.is_some() {
        // Another user must read the config and write the admin address beside it.
        use std::os::unix::fs::PermissionsExt;
        let open = |p: &Path, mode| std::fs::set_permissions(p, PermissionsExt::from_mode(mode));
        open(&dir, 0o777)
            .and_then(|_| open(&cfg_path, 0o644))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let admin_path = dir.join("admin");
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.prefix)
        .arg("-c")
        .arg(&cfg_path)
        .arg("--admin-address-path")
        .arg(&admin_path)
        .args(["--concurrency", "1", "-l", "error"])
        .args(&launch.extra)
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Held open until the child has joined it.
    let netns_file = match sandbox {
        Some(sb) => {
            let path = format!("/var/run/netns/{}", sb.netns);
            Some(std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?)
        }
        None => None,
    };
    let uid = sandbox.map(|sb| sb.uid);
    let ns_fd = netns_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    pre_exec(&mut cmd, cpu, ns_fd, uid);
    let t0 = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", launch.program.display()))?;
    drop(netns_file);
    let mut p = ProxyProc {
        child,
        addrs: Addrs {
            http1: ([0, 0, 0, 0], 0).into(),
            http2: ([0, 0, 0, 0], 0).into(),
            tcp: ([0, 0, 0, 0], 0).into(),
            resilient: ([0, 0, 0, 0], 0).into(),
            relay: ([0, 0, 0, 0], 0).into(),
        },
        admin: ([0, 0, 0, 0], 0).into(),
        ready_after: Duration::ZERO,
        idle_rss_kib: 0,
        dir,
        netns: sandbox.map(|sb| sb.netns.clone()),
    };
    let deadline = t0 + launch.ready_timeout;
    p.admin = loop {
        if let Some(a) = std::fs::read_to_string(&admin_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            if admin_in(p.netns.as_deref(), a, "/ready").is_some_and(|(c, _)| c == 200) {
                break a;
            }
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            return Err(format!("{name} exited before it was ready: {st}"));
        }
        if Instant::now() > deadline {
            return Err(format!("{name} not ready in {:?}", launch.ready_timeout));
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    p.ready_after = t0.elapsed();
    Ok(p)
}

/// The `remora` binary of this tree, built first (in the profile this harness was built
/// with) so the numbers are for the current code.
pub fn remora_bin() -> Result<PathBuf, String> {
    workspace_bin("remora", "remora")
}

/// The `iptables-init` binary of this tree, built first.
pub fn iptables_init_bin() -> Result<PathBuf, String> {
    workspace_bin("iptables-init", "iptables-init")
}

fn workspace_bin(package: &str, bin: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = workspace_root();
    let release = !cfg!(debug_assertions);
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.current_dir(&root).status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("building {bin} failed"));
    }
    // Cargo put it beside this harness: the same target directory, target and profile.
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no directory", exe.display()))?;
    Ok(dir.join(bin))
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

/// In the child before exec: join the network namespace open at `netns_fd`, become
/// `uid` (group too, no supplementary groups), and pin to `cpu`.
fn pre_exec(cmd: &mut Command, cpu: usize, netns_fd: Option<i32>, uid: Option<u32>) {
    // SAFETY: between fork and exec the child only makes system calls (setns, setgroups,
    // setgid, setuid, sched_setaffinity), all async-signal-safe, on a descriptor the
    // parent keeps open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(uid) = uid {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            crate::procstat::pin_current_thread(cpu);
            Ok(())
        });
    }
}
