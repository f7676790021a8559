//! The interception testbed: a "pod" network namespace with istio-iptables rules applied
//! by `iptables-init` with the sidecar injector's default flags, a "bare" namespace
//! without rules for the no-proxy baseline, and a "service" namespace holding the
//! upstreams, joined to each of the others by a veth pair. Dropping it deletes all three.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use tests::istio_iptables::INJECTOR_ARGS;
use tests::netns::Netns;

use crate::targets::{Sandbox, Target};
use crate::upstream::{self, Place, Upstreams};

/// The sidecar's user: iptables does not capture its connections.
pub const PROXY_UID: u32 = 1337;
/// The service's HTTP port (an Istio per-port listener, `0.0.0.0_80`).
pub const HTTP_PORT: u16 = 80;
/// The service's TCP echo port (an Istio per-service TCP listener).
pub const ECHO_PORT: u16 = 9000;
/// The service as the pod sees it.
pub const POD_SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
/// The service as the bare namespace sees it.
const BARE_SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 1, 1);

/// The services in the service namespace.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    /// HTTP/1.1 and HTTP/2 on [`HTTP_PORT`].
    Http,
    /// TCP echo on [`ECHO_PORT`].
    Echo,
}

pub struct NetBed {
    pub pod: Netns,
    pub bare: Netns,
    _svc: Netns,
    /// The upstreams serve until the harness exits; their sockets keep the service
    /// namespace alive that long after its name is deleted.
    up: Upstreams,
}

impl NetBed {
    /// Builds the namespaces, applies the rules in the pod and starts the upstreams in
    /// the service namespace on `cpu`.
    pub fn new(iptables_init: &Path, cpu: usize, body_size: usize) -> Result<NetBed, String> {
        // The namespace helpers panic with the failing command's output; this harness
        // reports it as an error instead.
        let made = std::panic::catch_unwind(|| {
            let (pod, bare, svc) = (Netns::new("pod"), Netns::new("bare"), Netns::new("svc"));
            pod.link(&svc, "10.89.0.2/24", "10.89.0.1/24");
            bare.link(&svc, "10.89.1.2/24", "10.89.1.1/24");
            (pod, bare, svc)
        });
        let (pod, bare, svc) =
            made.map_err(|_| "creating the namespaces failed (see the message above)")?;
        let init = pod
            .command(&iptables_init.to_string_lossy())
            .args(INJECTOR_ARGS)
            .output()
            .map_err(|e| format!("{}: {e}", iptables_init.display()))?;
        if !init.status.success() {
            return Err(format!(
                "iptables-init in the pod namespace: {}",
                String::from_utf8_lossy(&init.stderr)
            ));
        }
        for ns in [&pod, &bare] {
            tune_for_short_connections(ns)?;
        }
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let up = upstream::start_at(
            cpu,
            body_size,
            Place {
                netns: Some(svc.name.clone()),
                http: any(HTTP_PORT),
                tcp: any(0),
                echo: any(ECHO_PORT),
            },
        )?;
        Ok(NetBed {
            pod,
            bare,
            _svc: svc,
            up,
        })
    }

    /// How the proxies run: in the pod, as the proxy user.
    pub fn sandbox(&self) -> Sandbox {
        Sandbox {
            netns: self.pod.name.clone(),
            uid: PROXY_UID,
        }
    }

    /// Where `t`'s clients run and the address of `service` they dial: the bare
    /// namespace for the no-proxy baseline, the pod (whose connections are captured)
    /// otherwise.
    pub fn client(&self, t: Target, service: Service) -> (String, SocketAddr) {
        let port = match service {
            Service::Http => self.up.http.port(),
            Service::Echo => self.up.echo.port(),
        };
        match t {
            Target::Direct => (
                self.bare.name.clone(),
                (IpAddr::V4(BARE_SVC_IP), port).into(),
            ),
            Target::Remora | Target::Envoy => {
                (self.pod.name.clone(), (IpAddr::V4(POD_SVC_IP), port).into())
            }
        }
    }
}

/// A connection per call leaves sockets in TIME_WAIT (client side, and the proxy's
/// upstream side) and conntrack entries for REDIRECT: let the namespace reuse both
/// quickly, so tens of thousands of connections a second do not run out of ports.
fn tune_for_short_connections(ns: &Netns) -> Result<(), String> {
    let name = ns.name.clone();
    tests::netns::in_netns(&name, || {
        let set = |key: &str, v: &str| {
            let path = format!("/proc/sys/{key}");
            std::fs::write(&path, v).map_err(|e| format!("{path}: {e}"))
        };
        set("net/ipv4/tcp_tw_reuse", "1")?;
        set("net/ipv4/ip_local_port_range", "16000 60999")?;
        // Present once the conntrack module is loaded (the pod's REDIRECT rules load it).
        let ct = "net/netfilter/nf_conntrack_tcp_timeout_time_wait";
        if Path::new("/proc/sys").join(ct).exists() {
            set(ct, "1")?;
        }
        Ok(())
    })
}
