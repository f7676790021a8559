//! Network namespaces for tests that need real kernel rules: created with `ip netns add`
//! under a name unique to the test process, joined by veth pairs, and deleted (with
//! everything inside) on drop.
//!
//! These tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip`/`iptables`. Without
//! them [`root_or_skip`] prints why the test is skipped; when `REMORA_REQUIRE_ROOT_TESTS`
//! is set (CI sets it) a skip is a failure instead, so CI cannot pass without running them.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether namespace tests can run here. Prints the reason when they cannot, and panics
/// instead when `REMORA_REQUIRE_ROOT_TESTS` is set.
pub fn root_or_skip(test: &str) -> bool {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(u32::MAX);
    let missing: Vec<&str> = ["ip", "iptables-restore", "iptables-save"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    let reason = if uid != 0 {
        Some("it needs root (network namespaces and iptables)".to_owned())
    } else if !missing.is_empty() {
        Some(format!(
            "{} not installed (apt-get install iproute2 iptables)",
            missing.join(", ")
        ))
    } else {
        None
    };
    match reason {
        None => true,
        Some(r) if std::env::var_os("REMORA_REQUIRE_ROOT_TESTS").is_some() => {
            panic!("{test}: cannot run: {r}, and REMORA_REQUIRE_ROOT_TESTS is set")
        }
        Some(r) => {
            eprintln!("SKIPPED {test}: {r}");
            false
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace with `lo` up.
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "rmr-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args` inside; returns its output whatever the status.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.name))
    }

    /// Runs `program args` inside and panics with its stderr unless it succeeds.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "in {}: {program} {}: {}{}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `iptables-save` (or `ip6tables-save`) without comments and counters: the rules
    /// as a comparable text.
    pub fn rules(&self, save: &str) -> String {
        self.ok(save, &[])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                // `:CHAIN POLICY [packets:bytes]` -> `:CHAIN POLICY`
                match (l.starts_with(':'), l.rfind(" [")) {
                    (true, Some(i)) => &l[..i],
                    _ => l,
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Joins this namespace to `other` by a veth pair: `self_addr` (CIDR, IPv4 or IPv6)
    /// on this side, `other_addr` on the other, both up.
    pub fn link(&self, other: &Netns, self_addr: &str, other_addr: &str) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (
            format!("va{}{n}", std::process::id() % 10000),
            format!("vb{}{n}", std::process::id() % 10000),
        );
        run_ok(
            "ip",
            &[
                "link",
                "add",
                &a,
                "netns",
                &self.name,
                "type",
                "veth",
                "peer",
                "name",
                &b,
                "netns",
                &other.name,
            ],
        );
        self.add_addr(self_addr, &a);
        self.ok("ip", &["link", "set", &a, "up"]);
        other.add_addr(other_addr, &b);
        other.ok("ip", &["link", "set", &b, "up"]);
    }

    /// Adds `cidr` to `dev`; IPv6 addresses skip duplicate address detection, so they
    /// can be bound at once.
    fn add_addr(&self, cidr: &str, dev: &str) {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ok("ip", &args);
    }
}

/// Runs `f` on a thread that has joined network namespace `name`: sockets it creates
/// live in that namespace.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = name.to_owned();
    std::thread::spawn(move || {
        join(&name).unwrap_or_else(|e| panic!("{e}"));
        f()
    })
    .join()
    .expect("thread in netns")
}

/// Moves the calling thread into network namespace `name` (made by `ip netns add`):
/// sockets it creates from then on live there. Other threads are not affected.
pub fn join(name: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{name}");
    let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns on a namespace file this thread holds open; it changes only this
    // thread's network namespace.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Netns {
    /// Runs `f` inside this namespace (see [`in_netns`]). Sockets keep the namespace
    /// they were made in, so a listener bound here can be served from any thread.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
