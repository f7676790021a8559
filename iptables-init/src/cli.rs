//! The command line of `istio-iptables`, flag for flag: the short and long names Istio's
//! sidecar injector and users write. Every value is kept as text here; `settings.rs` reads
//! the environment for flags not given and validates everything.

use clap::Parser;

#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "iptables-init",
    about = "Redirects a pod's TCP traffic to the sidecar proxy, as istio-iptables does",
    disable_version_flag = true,
    // As with istio-iptables' flag parser, a repeated flag takes its last value.
    args_override_self = true
)]
pub struct Args {
    /// Port all outbound TCP traffic is redirected to (env ENVOY_PORT; default 15001).
    #[arg(short = 'p', long = "envoy-port")]
    pub envoy_port: Option<String>,
    /// Port all inbound TCP traffic is redirected to (env INBOUND_CAPTURE_PORT; default 15006).
    #[arg(short = 'z', long = "inbound-capture-port")]
    pub inbound_capture_port: Option<String>,
    /// The tunnel port, never captured (env INBOUND_TUNNEL_PORT; default 15008).
    #[arg(short = 'e', long = "inbound-tunnel-port")]
    pub inbound_tunnel_port: Option<String>,
    /// UID(s) whose traffic is not redirected: the proxy's (env PROXY_UID; default 1337).
    #[arg(short = 'u', long = "proxy-uid")]
    pub proxy_uid: Option<String>,
    /// GID(s) whose traffic is not redirected (env PROXY_GID; default: the UID).
    #[arg(short = 'g', long = "proxy-gid")]
    pub proxy_gid: Option<String>,
    /// Inbound mode: REDIRECT or TPROXY (env ISTIO_INBOUND_INTERCEPTION_MODE).
    #[arg(short = 'm', long = "istio-inbound-interception-mode")]
    pub inbound_interception_mode: Option<String>,
    /// TPROXY mark (env ISTIO_INBOUND_TPROXY_MARK; default 1337).
    #[arg(short = 't', long = "istio-inbound-tproxy-mark")]
    pub inbound_tproxy_mark: Option<String>,
    /// TPROXY route table (env ISTIO_INBOUND_TPROXY_ROUTE_TABLE; default 133).
    #[arg(short = 'r', long = "istio-inbound-tproxy-route-table")]
    pub inbound_tproxy_route_table: Option<String>,
    /// Inbound ports to capture, or `*` (env ISTIO_INBOUND_PORTS).
    #[arg(short = 'b', long = "istio-inbound-ports")]
    pub inbound_ports: Option<String>,
    /// Inbound ports not captured under `-b '*'` (env ISTIO_LOCAL_EXCLUDE_PORTS).
    #[arg(short = 'd', long = "istio-local-exclude-ports")]
    pub local_exclude_ports: Option<String>,
    /// Interfaces whose traffic is never captured (env ISTIO_EXCLUDE_INTERFACES).
    #[arg(short = 'c', long = "istio-exclude-interfaces")]
    pub exclude_interfaces: Option<String>,
    /// Outbound CIDRs to capture, or `*` (env ISTIO_SERVICE_CIDR).
    #[arg(short = 'i', long = "istio-service-cidr")]
    pub service_cidr: Option<String>,
    /// Outbound CIDRs not captured (env ISTIO_SERVICE_EXCLUDE_CIDR).
    #[arg(short = 'x', long = "istio-service-exclude-cidr")]
    pub service_exclude_cidr: Option<String>,
    /// Outbound ports always captured (env ISTIO_OUTBOUND_PORTS).
    #[arg(short = 'q', long = "istio-outbound-ports")]
    pub outbound_ports: Option<String>,
    /// Outbound ports never captured (env ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE).
    #[arg(short = 'o', long = "istio-local-outbound-ports-exclude")]
    pub local_outbound_ports_exclude: Option<String>,
    /// Virtual interfaces whose inbound traffic is treated as outbound (env KUBE_VIRT_INTERFACES).
    #[arg(short = 'k', long = "kube-virt-interfaces")]
    pub kube_virt_interfaces: Option<String>,
    /// Capture DNS (port 53) to the agent (env REDIRECT_DNS, ISTIO_META_DNS_CAPTURE).
    #[arg(long = "redirect-dns", num_args = 0..=1, default_missing_value = "true")]
    pub redirect_dns: Option<String>,
    /// With --redirect-dns: all port-53 traffic, not only to the resolv.conf servers.
    #[arg(long = "capture-all-dns", num_args = 0..=1, default_missing_value = "true")]
    pub capture_all_dns: Option<String>,
    /// Drop packets conntrack finds INVALID (env DROP_INVALID, INVALID_DROP).
    #[arg(long = "drop-invalid", num_args = 0..=1, default_missing_value = "true")]
    pub drop_invalid: Option<String>,
    /// Print the rules instead of applying them.
    #[arg(short = 'n', long = "dry-run", num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: Option<String>,
    /// Prove that redirection works after applying (exit non-zero if not).
    #[arg(long = "run-validation", num_args = 0..=1, default_missing_value = "true")]
    pub run_validation: Option<String>,
    /// Do not apply rules (with --run-validation: only validate).
    #[arg(long = "skip-rule-apply", num_args = 0..=1, default_missing_value = "true")]
    pub skip_rule_apply: Option<String>,
    /// Remove the rules this tool added, and nothing else.
    #[arg(long = "cleanup", visible_alias = "cleanup-only", num_args = 0..=1, default_missing_value = "true")]
    pub cleanup: Option<String>,
    /// Port of the validation listener (env IPTABLES_PROBE_PORT; default 15002).
    #[arg(long = "iptables-probe-port")]
    pub probe_port: Option<String>,
    /// How long validation waits (env PROBE_TIMEOUT; default 5s).
    #[arg(long = "probe-timeout")]
    pub probe_timeout: Option<String>,
    /// Accepted for compatibility (`--log_output_level=default:info`); logging is to stderr.
    #[arg(long = "log_output_level", alias = "log-output-level")]
    pub log_output_level: Option<String>,
    /// Accepted for compatibility; the restore format is always used.
    #[arg(short = 'f', long = "restore-format", num_args = 0..=1, default_missing_value = "true")]
    pub restore_format: Option<String>,
}
