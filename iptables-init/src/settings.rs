//! The validated settings rule generation works from: the command line, with the
//! environment (`ISTIO_*` and the rest) for flags not given, and Istio's defaults.
//!
//! IPv6 and the DNS servers are settings no flag sets; `Host` carries them (detected from
//! the host in normal runs, given explicitly in tests).

use std::net::IpAddr;
use std::time::Duration;

use crate::cli::Args;

/// A usage error: the flag (short and long form) and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct UsageError {
    pub flag: &'static str,
    pub reason: String,
}

fn usage(flag: &'static str, reason: impl Into<String>) -> UsageError {
    UsageError {
        flag,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundMode {
    Redirect,
    Tproxy,
}

/// A list of ports, all ports (`*`), or none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Ports {
    #[default]
    None,
    All,
    List(Vec<u16>),
}

/// A list of CIDRs, every address (`*`), or none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Ranges {
    #[default]
    None,
    All,
    List(Vec<Cidr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What the host contributes: whether IPv6 rules are made, and the DNS servers from
/// `/etc/resolv.conf` (used with `--redirect-dns` unless `--capture-all-dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    pub ipv6: bool,
    /// As written in resolv.conf (Istio writes them into rules as text).
    pub dns_v4: Vec<String>,
    pub dns_v6: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub proxy_port: u16,
    pub inbound_capture_port: u16,
    pub inbound_tunnel_port: u16,
    /// UIDs and GIDs exempt from capture (names or numbers, as iptables' owner match).
    pub proxy_uids: Vec<String>,
    pub proxy_gids: Vec<String>,
    /// `None`: REDIRECT (Istio's default when unset).
    pub inbound_mode: InboundMode,
    pub tproxy_mark: String,
    pub tproxy_route_table: String,
    pub inbound_ports: Ports,
    pub inbound_ports_exclude: Vec<u16>,
    pub outbound_ranges: Ranges,
    pub outbound_ranges_exclude: Vec<Cidr>,
    pub outbound_ports: Vec<u16>,
    pub outbound_ports_exclude: Vec<u16>,
    pub kube_virt_interfaces: Vec<String>,
    pub exclude_interfaces: Vec<String>,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS` (default `*`) and `..._EXCLUDE`.
    pub owner_groups_include: String,
    pub owner_groups_exclude: String,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR` (default 127.0.0.1/32).
    pub host_ipv4_loopback_cidr: Cidr,
    pub redirect_dns: bool,
    pub capture_all_dns: bool,
    pub drop_invalid: bool,
    pub dry_run: bool,
    pub run_validation: bool,
    pub skip_rule_apply: bool,
    pub cleanup: bool,
    pub probe_port: u16,
    pub probe_timeout: Duration,
    pub host: Host,
}

/// Reads a flag's value, or its environment variables in order, or the default.
struct Source<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Source<'_> {
    fn text(&self, flag: &Option<String>, envs: &[&str], default: &str) -> String {
        if let Some(v) = flag {
            return v.clone();
        }
        envs.iter()
            .find_map(|e| (self.env)(e))
            .unwrap_or_else(|| default.to_owned())
    }

    fn boolean(
        &self,
        name: &'static str,
        flag: &Option<String>,
        envs: &[&str],
    ) -> Result<bool, UsageError> {
        let v = self.text(flag, envs, "false");
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" => Ok(true),
            "false" | "0" | "f" | "no" | "" => Ok(false),
            _ => Err(usage(name, format!("'{v}' is not true or false"))),
        }
    }
}

/// Istio's list splitting: comma separated, spaces trimmed, empty items dropped.
fn split(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn port(flag: &'static str, s: &str) -> Result<u16, UsageError> {
    s.trim()
        .parse::<u16>()
        .map_err(|_| usage(flag, format!("'{s}' is not a port (0-65535)")))
}

fn port_list(flag: &'static str, s: &str) -> Result<Vec<u16>, UsageError> {
    split(s).iter().map(|p| port(flag, p)).collect()
}

fn ports(flag: &'static str, s: &str) -> Result<Ports, UsageError> {
    match s.trim() {
        "" => Ok(Ports::None),
        "*" => Ok(Ports::All),
        _ => Ok(Ports::List(port_list(flag, s)?)),
    }
}

fn cidr(flag: &'static str, s: &str) -> Result<Cidr, UsageError> {
    let bad = || usage(flag, format!("'{s}' is not a CIDR (address/length)"));
    let (a, l) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(Cidr { addr, len })
}

fn cidr_list(flag: &'static str, s: &str) -> Result<Vec<Cidr>, UsageError> {
    split(s).iter().map(|c| cidr(flag, c)).collect()
}

fn ranges(flag: &'static str, s: &str) -> Result<Ranges, UsageError> {
    match s.trim() {
        "" => Ok(Ranges::None),
        "*" => Ok(Ranges::All),
        _ => Ok(Ranges::List(cidr_list(flag, s)?)),
    }
}

fn ids(flag: &'static str, s: &str) -> Result<Vec<String>, UsageError> {
    let v = split(s);
    if let Some(bad) = v.iter().find(|x| x.chars().any(char::is_whitespace)) {
        return Err(usage(flag, format!("'{bad}' is not a user or group")));
    }
    Ok(v)
}

fn duration(flag: &'static str, s: &str) -> Result<Duration, UsageError> {
    let bad = || usage(flag, format!("'{s}' is not a duration such as 5s or 500ms"));
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

impl Settings {
    /// Validates `args`, with `env` for what the command line leaves out.
    pub fn new(
        args: &Args,
        env: &dyn Fn(&str) -> Option<String>,
        host: Host,
    ) -> Result<Settings, UsageError> {
        let src = Source { env };
        let proxy_uids = ids(
            "-u/--proxy-uid",
            &src.text(&args.proxy_uid, &["PROXY_UID"], "1337"),
        )?;
        let gid_text = src.text(&args.proxy_gid, &["PROXY_GID"], "");
        let proxy_gids = if gid_text.trim().is_empty() {
            proxy_uids.clone()
        } else {
            ids("-g/--proxy-gid", &gid_text)?
        };
        let mode = src.text(
            &args.inbound_interception_mode,
            &["ISTIO_INBOUND_INTERCEPTION_MODE"],
            "",
        );
        let inbound_mode = match mode.as_str() {
            "" | "REDIRECT" => InboundMode::Redirect,
            "TPROXY" => InboundMode::Tproxy,
            other => {
                return Err(usage(
                    "-m/--istio-inbound-interception-mode",
                    format!("'{other}' is not REDIRECT or TPROXY"),
                ))
            }
        };
        let outbound_ranges_exclude_text = src.text(
            &args.service_exclude_cidr,
            &["ISTIO_SERVICE_EXCLUDE_CIDR"],
            "",
        );
        if outbound_ranges_exclude_text.trim() == "*" {
            return Err(usage(
                "-x/--istio-service-exclude-cidr",
                "'*' is not allowed (exclude specific ranges)",
            ));
        }
        let settings = Settings {
            proxy_port: port(
                "-p/--envoy-port",
                &src.text(&args.envoy_port, &["ENVOY_PORT"], "15001"),
            )?,
            inbound_capture_port: port(
                "-z/--inbound-capture-port",
                &src.text(
                    &args.inbound_capture_port,
                    &["INBOUND_CAPTURE_PORT"],
                    "15006",
                ),
            )?,
            inbound_tunnel_port: port(
                "-e/--inbound-tunnel-port",
                &src.text(&args.inbound_tunnel_port, &["INBOUND_TUNNEL_PORT"], "15008"),
            )?,
            proxy_uids,
            proxy_gids,
            inbound_mode,
            tproxy_mark: src.text(
                &args.inbound_tproxy_mark,
                &["ISTIO_INBOUND_TPROXY_MARK"],
                "1337",
            ),
            tproxy_route_table: src.text(
                &args.inbound_tproxy_route_table,
                &["ISTIO_INBOUND_TPROXY_ROUTE_TABLE"],
                "133",
            ),
            inbound_ports: ports(
                "-b/--istio-inbound-ports",
                &src.text(&args.inbound_ports, &["ISTIO_INBOUND_PORTS"], ""),
            )?,
            inbound_ports_exclude: port_list(
                "-d/--istio-local-exclude-ports",
                &src.text(
                    &args.local_exclude_ports,
                    &["ISTIO_LOCAL_EXCLUDE_PORTS"],
                    "",
                ),
            )?,
            outbound_ranges: ranges(
                "-i/--istio-service-cidr",
                &src.text(&args.service_cidr, &["ISTIO_SERVICE_CIDR"], ""),
            )?,
            outbound_ranges_exclude: cidr_list(
                "-x/--istio-service-exclude-cidr",
                &outbound_ranges_exclude_text,
            )?,
            outbound_ports: port_list(
                "-q/--istio-outbound-ports",
                &src.text(&args.outbound_ports, &["ISTIO_OUTBOUND_PORTS"], ""),
            )?,
            outbound_ports_exclude: port_list(
                "-o/--istio-local-outbound-ports-exclude",
                &src.text(
                    &args.local_outbound_ports_exclude,
                    &["ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"],
                    "",
                ),
            )?,
            kube_virt_interfaces: split(&src.text(
                &args.kube_virt_interfaces,
                &["KUBE_VIRT_INTERFACES"],
                "",
            )),
            exclude_interfaces: split(&src.text(
                &args.exclude_interfaces,
                &["ISTIO_EXCLUDE_INTERFACES"],
                "",
            )),
            owner_groups_include: src.text(&None, &["ISTIO_OUTBOUND_OWNER_GROUPS"], "*"),
            owner_groups_exclude: src.text(&None, &["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"], ""),
            host_ipv4_loopback_cidr: cidr(
                "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
                &src.text(
                    &None,
                    &["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"],
                    "127.0.0.1/32",
                ),
            )?,
            redirect_dns: src.boolean(
                "--redirect-dns",
                &args.redirect_dns,
                &["REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"],
            )?,
            capture_all_dns: src.boolean(
                "--capture-all-dns",
                &args.capture_all_dns,
                &["CAPTURE_ALL_DNS"],
            )?,
            drop_invalid: src.boolean(
                "--drop-invalid",
                &args.drop_invalid,
                &["DROP_INVALID", "INVALID_DROP"],
            )?,
            dry_run: src.boolean("-n/--dry-run", &args.dry_run, &["DRY_RUN"])?,
            run_validation: src.boolean(
                "--run-validation",
                &args.run_validation,
                &["RUN_VALIDATION"],
            )?,
            skip_rule_apply: src.boolean(
                "--skip-rule-apply",
                &args.skip_rule_apply,
                &["SKIP_RULE_APPLY"],
            )?,
            cleanup: src.boolean("--cleanup", &args.cleanup, &[])?,
            probe_port: port(
                "--iptables-probe-port",
                &src.text(&args.probe_port, &["IPTABLES_PROBE_PORT"], "15002"),
            )?,
            probe_timeout: duration(
                "--probe-timeout",
                &src.text(&args.probe_timeout, &["PROBE_TIMEOUT"], "5s"),
            )?,
            host,
        };
        if settings.cleanup && settings.skip_rule_apply {
            return Err(usage(
                "--cleanup",
                "conflicts with --skip-rule-apply (nothing would be done)",
            ));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(line: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
        let argv = std::iter::once("iptables-init").chain(line.split_whitespace());
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Settings::new(&args, &lookup, Host::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_istios() {
        let s = parse("", &[]).expect("valid");
        assert_eq!(
            (s.proxy_port, s.inbound_capture_port, s.inbound_tunnel_port),
            (15001, 15006, 15008)
        );
        assert_eq!(s.proxy_uids, vec!["1337"]);
        assert_eq!(s.proxy_gids, vec!["1337"], "the GID defaults to the UID");
        assert_eq!(s.inbound_mode, InboundMode::Redirect);
        assert_eq!(
            (s.tproxy_mark.as_str(), s.tproxy_route_table.as_str()),
            ("1337", "133")
        );
        assert_eq!(s.inbound_ports, Ports::None);
        assert_eq!(s.outbound_ranges, Ranges::None);
        assert_eq!(s.owner_groups_include, "*");
        assert_eq!(s.host_ipv4_loopback_cidr.to_string(), "127.0.0.1/32");
        assert_eq!(s.probe_timeout, Duration::from_secs(5));
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_defaults() {
        let env = [
            ("ENVOY_PORT", "16001"),
            ("ISTIO_INBOUND_PORTS", "*"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "java,202"),
            ("ISTIO_META_DNS_CAPTURE", "true"),
        ];
        let s = parse("-p 17001 -m TPROXY", &env).expect("valid");
        assert_eq!(s.proxy_port, 17001);
        assert_eq!(s.inbound_ports, Ports::All);
        assert_eq!(s.inbound_mode, InboundMode::Tproxy);
        assert_eq!(s.owner_groups_exclude, "java,202");
        assert!(s.redirect_dns);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases = [
            (
                "-p 70000",
                "-p/--envoy-port: '70000' is not a port (0-65535)",
            ),
            (
                "-b 80,http",
                "-b/--istio-inbound-ports: 'http' is not a port (0-65535)",
            ),
            (
                "-i 10.0.0.0/33",
                "-i/--istio-service-cidr: '10.0.0.0/33' is not a CIDR (address/length)",
            ),
            (
                "-x 10.0.0.1",
                "-x/--istio-service-exclude-cidr: '10.0.0.1' is not a CIDR (address/length)",
            ),
            (
                "-x *",
                "-x/--istio-service-exclude-cidr: '*' is not allowed (exclude specific ranges)",
            ),
            (
                "-m NAT",
                "-m/--istio-inbound-interception-mode: 'NAT' is not REDIRECT or TPROXY",
            ),
            (
                "--redirect-dns=maybe",
                "--redirect-dns: 'maybe' is not true or false",
            ),
            (
                "--cleanup --skip-rule-apply",
                "--cleanup: conflicts with --skip-rule-apply (nothing would be done)",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line, &[]).expect_err(line), want, "{line}");
        }
        let unknown = parse("--bogus 1", &[]).expect_err("unknown flag");
        assert!(unknown.contains("--bogus"), "{unknown}");
    }
}
