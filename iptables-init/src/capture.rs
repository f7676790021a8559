//! Rule generation: a pure function from [`Settings`] to the rules istio-iptables makes,
//! in the same order, so the `iptables-restore` payloads are Istio's byte for byte.
//!
//! The order matters to the kernel (first match wins) and to Istio's goldens:
//! excluded interfaces, virtual interfaces, invalid-packet drop, the inbound chains,
//! inbound capture, the OUTPUT jump, outbound port exclusions, the inbound-passthrough
//! source, the proxy's own UIDs and GIDs, owner groups, DNS, loopback, outbound ranges
//! and ports, and the TPROXY marks.

use crate::builder::{Builder, VERSIONED};
use crate::settings::{Cidr, InboundMode, Ports, Ranges, Settings};

/// Chains istio-iptables creates, in every table it uses.
pub const INBOUND: &str = "ISTIO_INBOUND";
pub const REDIRECT: &str = "ISTIO_REDIRECT";
pub const IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
pub const OUTPUT: &str = "ISTIO_OUTPUT";
pub const OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
pub const DIVERT: &str = "ISTIO_DIVERT";
pub const TPROXY: &str = "ISTIO_TPROXY";
pub const DROP: &str = "ISTIO_DROP";

/// Every chain name istio-iptables may have created, for cleanup of earlier runs.
pub const CHAINS: [&str; 8] = [
    INBOUND,
    REDIRECT,
    IN_REDIRECT,
    OUTPUT,
    OUTPUT_DNS,
    DIVERT,
    TPROXY,
    DROP,
];

/// The pilot-agent's DNS listener.
const DNS_PORT: &str = "15053";
/// Mark on the proxy's outbound packets to the local app in TPROXY mode.
const OUTBOUND_MARK: &str = "1338";
/// Source address of the proxy's inbound passthrough connections.
const PASSTHROUGH_V4: &str = "127.0.0.6/32";
const PASSTHROUGH_V6: &str = "::6/128";
const LOOPBACK_V6: &str = "::1/128";

/// CIDRs of one family, as Istio splits a mixed list.
#[derive(Default)]
struct FamilyRanges {
    all: bool,
    cidrs: Vec<String>,
    has_loopback: bool,
}

fn split_families(ranges: &Ranges) -> (FamilyRanges, FamilyRanges) {
    let mut v4 = FamilyRanges::default();
    let mut v6 = FamilyRanges::default();
    match ranges {
        Ranges::None => {}
        Ranges::All => {
            v4.all = true;
            v6.all = true;
        }
        Ranges::List(list) => {
            for c in list {
                let fam = if c.addr.is_ipv4() { &mut v4 } else { &mut v6 };
                fam.cidrs.push(c.to_string());
                fam.has_loopback |= c.addr.is_loopback();
            }
        }
    }
    (v4, v6)
}

fn exclusions(list: &[Cidr]) -> (Vec<String>, Vec<String>) {
    let (v4, v6): (Vec<&Cidr>, Vec<&Cidr>) = list.iter().partition(|c| c.addr.is_ipv4());
    let text = |v: Vec<&Cidr>| v.into_iter().map(ToString::to_string).collect();
    (text(v4), text(v6))
}

/// The proxy's UIDs then GIDs, each with its owner-match option.
fn proxy_owners(s: &Settings) -> impl Iterator<Item = (&'static str, &str)> {
    let uids = s.proxy_uids.iter().map(|u| ("--uid-owner", u.as_str()));
    uids.chain(s.proxy_gids.iter().map(|g| ("--gid-owner", g.as_str())))
}

/// The rules for `s`, both families (IPv6 when `s.host.ipv6`).
pub fn rules(s: &Settings) -> Builder {
    Gen::new(s).run()
}

struct Gen<'a> {
    s: &'a Settings,
    b: Builder,
    loopback_v4: String,
    tunnel: String,
    redirect_dns: bool,
}

impl<'a> Gen<'a> {
    fn new(s: &'a Settings) -> Self {
        // With no servers to redirect and not capturing all, DNS capture is off.
        let redirect_dns = s.redirect_dns
            && (s.capture_all_dns || !s.host.dns_v4.is_empty() || !s.host.dns_v6.is_empty());
        Gen {
            s,
            b: Builder::new(s.host.ipv6),
            loopback_v4: s.host_ipv4_loopback_cidr.to_string(),
            tunnel: s.inbound_tunnel_port.to_string(),
            redirect_dns,
        }
    }

    fn tproxy(&self) -> bool {
        self.s.inbound_mode == InboundMode::Tproxy
    }

    fn run(mut self) -> Builder {
        let s = self.s;
        let (include_v4, include_v6) = split_families(&s.outbound_ranges);
        let (exclude_v4, exclude_v6) = exclusions(&s.outbound_ranges_exclude);
        let loopback_included = include_v4.has_loopback || include_v6.has_loopback;

        self.exclude_interfaces();
        for i in &s.kube_virt_interfaces {
            self.b
                .insert("nat", "PREROUTING", 1, &["-i", i, "-j", "RETURN"]);
        }
        if s.drop_invalid {
            self.b.append(
                "mangle",
                "PREROUTING",
                &["-m", "conntrack", "--ctstate", "INVALID", "-j", DROP],
            );
            self.b.append("mangle", DROP, &["-j", "DROP"]);
        }
        self.b.append(
            "nat",
            INBOUND,
            &["-p", "tcp", "--dport", &self.tunnel, "-j", "RETURN"],
        );
        let proxy_port = s.proxy_port.to_string();
        self.b.append(
            "nat",
            REDIRECT,
            &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &proxy_port],
        );
        let capture_port = s.inbound_capture_port.to_string();
        self.b.append(
            "nat",
            IN_REDIRECT,
            &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &capture_port],
        );
        self.inbound();

        self.b.append("nat", "OUTPUT", &["-j", OUTPUT]);
        for p in &s.outbound_ports_exclude {
            let p = p.to_string();
            for proto in ["tcp", "udp"] {
                self.b
                    .append("nat", OUTPUT, &["-p", proto, "--dport", &p, "-j", "RETURN"]);
            }
        }
        self.b.append_versioned(
            PASSTHROUGH_V4,
            PASSTHROUGH_V6,
            "nat",
            OUTPUT,
            &["-o", "lo", "-s", VERSIONED, "-j", "RETURN"],
        );
        for uid in &s.proxy_uids {
            self.owner_exemption("--uid-owner", uid, self.redirect_dns, loopback_included);
        }
        for gid in &s.proxy_gids {
            // For GIDs only the RETURN rule leaves port 53 alone (as Istio does).
            self.owner_exemption("--gid-owner", gid, false, loopback_included);
        }
        self.owner_groups();
        if self.redirect_dns {
            self.dns();
        }
        self.b.append_versioned(
            &self.loopback_v4,
            LOOPBACK_V6,
            "nat",
            OUTPUT,
            &["-d", VERSIONED, "-j", "RETURN"],
        );
        for c in &exclude_v4 {
            self.b.v4.append("nat", OUTPUT, &["-d", c, "-j", "RETURN"]);
        }
        for c in &exclude_v6 {
            self.b.append_v6("nat", OUTPUT, &["-d", c, "-j", "RETURN"]);
        }
        for p in &s.outbound_ports {
            let p = p.to_string();
            self.b
                .append("nat", OUTPUT, &["-p", "tcp", "--dport", &p, "-j", REDIRECT]);
        }
        self.outbound_include(&include_v4, false);
        self.outbound_include(&include_v6, true);
        if self.tproxy() {
            self.tproxy_marks();
        }
        self.b
    }

    fn exclude_interfaces(&mut self) {
        let tables: &[&str] = if self.tproxy() {
            &["nat", "mangle"]
        } else {
            &["nat"]
        };
        for table in tables {
            for i in &self.s.exclude_interfaces {
                self.b
                    .append(table, "PREROUTING", &["-i", i, "-j", "RETURN"]);
                self.b.append(table, "OUTPUT", &["-o", i, "-j", "RETURN"]);
            }
        }
    }

    /// Inbound capture: nothing without ports; REDIRECT in nat, or TPROXY in mangle.
    fn inbound(&mut self) {
        let s = self.s;
        if s.inbound_ports == Ports::None {
            return;
        }
        let capture_port = s.inbound_capture_port.to_string();
        let table = if self.tproxy() {
            self.b.append(
                "mangle",
                DIVERT,
                &["-j", "MARK", "--set-mark", &s.tproxy_mark],
            );
            self.b.append("mangle", DIVERT, &["-j", "ACCEPT"]);
            let mark = format!("{}/0xffffffff", s.tproxy_mark);
            self.b.append_versioned(
                &self.loopback_v4,
                LOOPBACK_V6,
                "mangle",
                TPROXY,
                &[
                    "!",
                    "-d",
                    VERSIONED,
                    "-p",
                    "tcp",
                    "-j",
                    "TPROXY",
                    "--tproxy-mark",
                    &mark,
                    "--on-port",
                    &capture_port,
                ],
            );
            "mangle"
        } else {
            "nat"
        };
        self.b
            .append(table, "PREROUTING", &["-p", "tcp", "-j", INBOUND]);
        let established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"];
        match &s.inbound_ports {
            Ports::All => {
                for p in &s.inbound_ports_exclude {
                    let p = p.to_string();
                    self.b.append(
                        table,
                        INBOUND,
                        &["-p", "tcp", "--dport", &p, "-j", "RETURN"],
                    );
                }
                if self.tproxy() {
                    let mut est = vec!["-p", "tcp"];
                    est.extend(established);
                    est.extend(["-j", DIVERT]);
                    self.b.append("mangle", INBOUND, &est);
                    self.b
                        .append("mangle", INBOUND, &["-p", "tcp", "-j", TPROXY]);
                } else {
                    self.b
                        .append("nat", INBOUND, &["-p", "tcp", "-j", IN_REDIRECT]);
                }
            }
            Ports::List(ports) => {
                for p in ports {
                    let p = p.to_string();
                    if self.tproxy() {
                        let mut est = vec!["-p", "tcp", "--dport", &p];
                        est.extend(established);
                        est.extend(["-j", DIVERT]);
                        self.b.append("mangle", INBOUND, &est);
                        self.b.append(
                            "mangle",
                            INBOUND,
                            &["-p", "tcp", "--dport", &p, "-j", TPROXY],
                        );
                    } else {
                        self.b.append(
                            "nat",
                            INBOUND,
                            &["-p", "tcp", "--dport", &p, "-j", IN_REDIRECT],
                        );
                    }
                }
            }
            Ports::None => {}
        }
    }

    /// The three rules per proxy UID or GID: its calls to the pod's own address over
    /// loopback go to the inbound listener; other loopback traffic of everyone else is
    /// left alone (unless loopback is an included range); its own traffic is never
    /// captured.
    fn owner_exemption(&mut self, owner: &str, id: &str, skip_dns: bool, loopback_included: bool) {
        let tunnel = self.tunnel.as_str();
        let dports = format!("53,{tunnel}");
        let mut redirect = vec!["-o", "lo", "!", "-d", VERSIONED, "-p", "tcp"];
        if skip_dns {
            redirect.extend(["-m", "multiport", "!", "--dports", &dports]);
        } else {
            redirect.extend(["!", "--dport", tunnel]);
        }
        redirect.extend(["-m", "owner", owner, id, "-j", IN_REDIRECT]);
        self.b
            .append_versioned(&self.loopback_v4, LOOPBACK_V6, "nat", OUTPUT, &redirect);
        if !loopback_included {
            if self.redirect_dns {
                self.b.append(
                    "nat",
                    OUTPUT,
                    &[
                        "-o", "lo", "-p", "tcp", "!", "--dport", "53", "-m", "owner", "!", owner,
                        id, "-j", "RETURN",
                    ],
                );
            } else {
                self.b.append(
                    "nat",
                    OUTPUT,
                    &["-o", "lo", "-m", "owner", "!", owner, id, "-j", "RETURN"],
                );
            }
        }
        self.b
            .append("nat", OUTPUT, &["-m", "owner", owner, id, "-j", "RETURN"]);
    }

    /// `ISTIO_OUTBOUND_OWNER_GROUPS` / `..._EXCLUDE`: which groups' traffic is captured.
    fn owner_groups(&mut self) {
        let s = self.s;
        let split = |t: &str| -> Vec<String> {
            t.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if s.owner_groups_include == "*" {
            for g in split(&s.owner_groups_exclude) {
                self.b.append(
                    "nat",
                    OUTPUT,
                    &["-m", "owner", "--gid-owner", &g, "-j", "RETURN"],
                );
            }
        } else {
            let groups = split(&s.owner_groups_include);
            let mut params: Vec<&str> = Vec::new();
            for g in &groups {
                params.extend(["-m", "owner", "!", "--gid-owner", g]);
            }
            params.extend(["-j", "RETURN"]);
            self.b.append("nat", OUTPUT, &params);
        }
    }

    fn dns(&mut self) {
        let s = self.s;
        let all = s.capture_all_dns;
        let (v4, v6) = (&s.host.dns_v4, &s.host.dns_v6);
        self.b.append("raw", "OUTPUT", &["-j", OUTPUT_DNS]);
        if all || !v4.is_empty() {
            self.b.v4.append("nat", OUTPUT, &["-j", OUTPUT_DNS]);
        }
        if all || !v6.is_empty() {
            self.b.append_v6("nat", OUTPUT, &["-j", OUTPUT_DNS]);
        }
        // TCP, then UDP (whose REDIRECT Istio spells `--to-port`).
        for (proto, to) in [("tcp", "--to-ports"), ("udp", "--to-port")] {
            let base = ["-p", proto, "--dport", "53"];
            if all {
                let mut p = base.to_vec();
                p.extend(["-j", "REDIRECT", to, DNS_PORT]);
                self.b.append("nat", OUTPUT_DNS, &p);
                continue;
            }
            for server in v4 {
                let d = format!("{server}/32");
                let mut p = base.to_vec();
                p.extend(["-d", &d, "-j", "REDIRECT", to, DNS_PORT]);
                self.b.v4.append("nat", OUTPUT_DNS, &p);
            }
            for server in v6 {
                let d = format!("{server}/128");
                let mut p = base.to_vec();
                p.extend(["-d", &d, "-j", "REDIRECT", to, DNS_PORT]);
                self.b.append_v6("nat", OUTPUT_DNS, &p);
            }
        }
        self.dns_conntrack_zones();
    }

    /// UDP DNS split into two conntrack zones: the proxy's queries to resolvers (zone 1)
    /// and the apps' queries to the proxy (zone 2).
    fn dns_conntrack_zones(&mut self) {
        let s = self.s;
        for (owner, id) in proxy_owners(s) {
            self.b.append(
                "raw",
                OUTPUT_DNS,
                &[
                    "-p", "udp", "--dport", "53", "-m", "owner", owner, id, "-j", "CT", "--zone",
                    "1",
                ],
            );
            self.b.append(
                "raw",
                OUTPUT_DNS,
                &[
                    "-p", "udp", "--sport", DNS_PORT, "-m", "owner", owner, id, "-j", "CT",
                    "--zone", "2",
                ],
            );
        }
        if s.capture_all_dns {
            self.b.append("raw", "PREROUTING", &["-j", INBOUND]);
            self.b.append(
                "raw",
                OUTPUT_DNS,
                &["-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2"],
            );
            self.b.append(
                "raw",
                INBOUND,
                &["-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1"],
            );
            return;
        }
        if !s.host.dns_v4.is_empty() {
            self.b.v4.append("raw", "PREROUTING", &["-j", INBOUND]);
        }
        for server in &s.host.dns_v4 {
            let a = format!("{server}/32");
            self.b.v4.append(
                "raw",
                OUTPUT_DNS,
                &[
                    "-p", "udp", "--dport", "53", "-d", &a, "-j", "CT", "--zone", "2",
                ],
            );
            self.b.v4.append(
                "raw",
                INBOUND,
                &[
                    "-p", "udp", "--sport", "53", "-s", &a, "-j", "CT", "--zone", "1",
                ],
            );
        }
        if !s.host.dns_v6.is_empty() {
            self.b.append_v6("raw", "PREROUTING", &["-j", INBOUND]);
        }
        for server in &s.host.dns_v6 {
            let a = format!("{server}/128");
            self.b.append_v6(
                "raw",
                OUTPUT_DNS,
                &[
                    "-p", "udp", "--dport", "53", "-d", &a, "-j", "CT", "--zone", "2",
                ],
            );
            self.b.append_v6(
                "raw",
                INBOUND,
                &[
                    "-p", "udp", "--sport", "53", "-s", &a, "-j", "CT", "--zone", "1",
                ],
            );
        }
    }

    /// Outbound ranges of one family: all remaining traffic, or the listed CIDRs, to
    /// the proxy; virtual interfaces' traffic likewise (inserted first in PREROUTING).
    fn outbound_include(&mut self, r: &FamilyRanges, v6: bool) {
        let ifaces = &self.s.kube_virt_interfaces;
        let b = &mut self.b;
        let mut add = |chain: &str, insert: bool, params: &[&str]| match (v6, insert) {
            (false, false) => b.v4.append("nat", chain, params),
            (false, true) => b.v4.insert("nat", chain, 1, params),
            (true, false) => b.append_v6("nat", chain, params),
            (true, true) => b.insert_v6("nat", chain, 1, params),
        };
        if r.all {
            add(OUTPUT, false, &["-j", REDIRECT]);
            for i in ifaces {
                add("PREROUTING", true, &["-i", i, "-j", REDIRECT]);
            }
            return;
        }
        for c in &r.cidrs {
            for i in ifaces {
                add("PREROUTING", true, &["-i", i, "-d", c, "-j", REDIRECT]);
            }
            add(OUTPUT, false, &["-d", c, "-j", REDIRECT]);
        }
    }

    /// TPROXY mode: keep the mark on the connection, do not mark the proxy's traffic to
    /// the app twice, and never loop the inbound listener back to itself.
    fn tproxy_marks(&mut self) {
        let s = self.s;
        let mark = s.tproxy_mark.as_str();
        self.b.append(
            "mangle",
            "PREROUTING",
            &[
                "-p",
                "tcp",
                "-m",
                "mark",
                "--mark",
                mark,
                "-j",
                "CONNMARK",
                "--save-mark",
            ],
        );
        self.b.append(
            "mangle",
            "OUTPUT",
            &[
                "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN",
            ],
        );
        for (owner, id) in proxy_owners(s) {
            self.b.append_versioned(
                &self.loopback_v4,
                LOOPBACK_V6,
                "mangle",
                "OUTPUT",
                &[
                    "!",
                    "-d",
                    VERSIONED,
                    "-p",
                    "tcp",
                    "-o",
                    "lo",
                    "-m",
                    "owner",
                    owner,
                    id,
                    "-j",
                    "MARK",
                    "--set-mark",
                    OUTBOUND_MARK,
                ],
            );
        }
        self.b.append(
            "mangle",
            "OUTPUT",
            &[
                "-p",
                "tcp",
                "-m",
                "connmark",
                "--mark",
                mark,
                "-j",
                "CONNMARK",
                "--restore-mark",
            ],
        );
        self.b.insert(
            "mangle",
            INBOUND,
            1,
            &["-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN"],
        );
        self.b.v4.insert(
            "mangle",
            INBOUND,
            2,
            &[
                "-p",
                "tcp",
                "-s",
                PASSTHROUGH_V4,
                "-i",
                "lo",
                "-j",
                "RETURN",
            ],
        );
        self.b.insert_v6(
            "mangle",
            INBOUND,
            2,
            &[
                "-p",
                "tcp",
                "-s",
                PASSTHROUGH_V6,
                "-i",
                "lo",
                "-j",
                "RETURN",
            ],
        );
        self.b.insert(
            "mangle",
            INBOUND,
            3,
            &[
                "-p",
                "tcp",
                "-i",
                "lo",
                "-m",
                "mark",
                "!",
                "--mark",
                OUTBOUND_MARK,
                "-j",
                "RETURN",
            ],
        );
    }
}

/// The command transcript Istio's capture test records (its goldens): the state probes,
/// the IPv4 and (when enabled) IPv6 restore payloads, and the final state dumps.
pub fn transcript(b: &Builder) -> String {
    let mut out = String::from("iptables-save\nip6tables-save\n");
    out.push_str(&b.v4.restore());
    if b.ipv6() {
        out.push_str(&b.v6.restore());
    }
    out.push_str("iptables-save\n");
    if b.ipv6() {
        out.push_str("ip6tables-save\n");
    }
    out
}
