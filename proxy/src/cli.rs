//! Command-line options, compatible with the `envoy` binary's flags so that pilot-agent
//! (or any wrapper) can start `remora` in its place.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "remora",
    disable_version_flag = true,
    about = "Remora: a drop-in data-plane proxy for Envoy configs"
)]
pub struct Options {
    /// Path to the v3 bootstrap (YAML or JSON).
    #[arg(short = 'c', long = "config-path")]
    pub config_path: Option<PathBuf>,
    /// Bootstrap YAML merged over the file (as protobuf MergeFrom).
    #[arg(long = "config-yaml")]
    pub config_yaml: Option<String>,
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    pub mode: Mode,
    /// Worker threads (default: available cores).
    #[arg(long)]
    pub concurrency: Option<usize>,
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// `component:level,...` with Envoy's component names, mapped onto Remora's modules.
    #[arg(long = "component-log-level")]
    pub component_log_level: Option<String>,
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    #[arg(long = "log-path")]
    pub log_path: Option<PathBuf>,
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,
    #[arg(long = "drain-strategy", value_enum, default_value_t = DrainStrategy::Gradual)]
    pub drain_strategy: DrainStrategy,
    #[arg(long = "parent-shutdown-time-s", default_value_t = 900)]
    pub parent_shutdown_time_s: u64,
    #[arg(long = "service-node")]
    pub service_node: Option<String>,
    #[arg(long = "service-cluster")]
    pub service_cluster: Option<String>,
    #[arg(long = "service-zone")]
    pub service_zone: Option<String>,
    #[arg(long = "local-address-ip-version", value_enum, default_value_t = IpVersion::V4)]
    pub local_address_ip_version: IpVersion,
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
    #[arg(long = "allow-unknown-static-fields")]
    pub allow_unknown_static_fields: bool,
    #[arg(long = "reject-unknown-dynamic-fields")]
    pub reject_unknown_dynamic_fields: bool,
    #[arg(long = "ignore-unknown-dynamic-fields")]
    pub ignore_unknown_dynamic_fields: bool,
    #[arg(long = "file-flush-interval-msec")]
    pub file_flush_interval_msec: Option<u64>,
    #[arg(long = "base-id")]
    pub base_id: Option<u64>,
    #[arg(long = "use-dynamic-base-id")]
    pub use_dynamic_base_id: bool,
    #[arg(long = "restart-epoch")]
    pub restart_epoch: Option<u64>,
    #[arg(long = "log-format-escaped")]
    pub log_format_escaped: bool,
    #[arg(long = "enable-fine-grain-logging")]
    pub enable_fine_grain_logging: bool,
    #[arg(long = "cpuset-threads")]
    pub cpuset_threads: bool,
    #[arg(long = "disable-extensions")]
    pub disable_extensions: Option<String>,
    #[arg(long = "enable-core-dump")]
    pub enable_core_dump: bool,
    #[arg(long = "skip-hot-restart-on-no-parent")]
    pub skip_hot_restart_on_no_parent: bool,
    #[arg(long = "hot-restart-version")]
    pub hot_restart_version: bool,
    #[arg(long = "stats-tag")]
    pub stats_tag: Vec<String>,
    #[arg(long = "socket-path")]
    pub socket_path: Option<String>,
    #[arg(long = "socket-mode")]
    pub socket_mode: Option<String>,
    #[arg(long = "enable-mutex-tracing")]
    pub enable_mutex_tracing: bool,
    #[arg(long = "file-flush-min-size-kb")]
    pub file_flush_min_size_kb: Option<u64>,
    #[arg(long = "log-stacktrace-single-entry")]
    pub log_stacktrace_single_entry: bool,
    #[arg(long = "skip-deprecated-logs")]
    pub skip_deprecated_logs: bool,
    #[arg(long = "allow-unknown-fields")]
    pub allow_unknown_fields: bool,
    #[arg(long = "base-id-path")]
    pub base_id_path: Option<PathBuf>,
    #[arg(long = "skip-hot-restart-parent-stats")]
    pub skip_hot_restart_parent_stats: bool,
    /// Write the admin address (`ip:port`) to this file once bound.
    #[arg(long = "admin-address-path")]
    pub admin_address_path: Option<PathBuf>,
    /// Print the version and exit.
    #[arg(long)]
    pub version: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Serve,
    Validate,
    #[value(name = "init_only")]
    InitOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrainStrategy {
    Gradual,
    Immediate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpVersion {
    V4,
    V6,
}

impl Options {
    /// Flags accepted for compatibility that change nothing in Remora; logged once at debug.
    pub fn inert_flags(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut note = |set: bool, name: &'static str| {
            if set {
                v.push(name);
            }
        };
        note(self.disable_hot_restart, "--disable-hot-restart");
        note(self.base_id.is_some(), "--base-id");
        note(self.use_dynamic_base_id, "--use-dynamic-base-id");
        note(self.restart_epoch.is_some(), "--restart-epoch");
        note(
            self.parent_shutdown_time_s != 900,
            "--parent-shutdown-time-s",
        );
        note(self.log_format_escaped, "--log-format-escaped");
        note(
            self.enable_fine_grain_logging,
            "--enable-fine-grain-logging",
        );
        note(self.cpuset_threads, "--cpuset-threads");
        note(self.disable_extensions.is_some(), "--disable-extensions");
        note(self.enable_core_dump, "--enable-core-dump");
        note(
            self.skip_hot_restart_on_no_parent,
            "--skip-hot-restart-on-no-parent",
        );
        note(self.service_zone.is_some(), "--service-zone");
        note(
            self.local_address_ip_version != IpVersion::V4,
            "--local-address-ip-version",
        );
        note(
            self.reject_unknown_dynamic_fields,
            "--reject-unknown-dynamic-fields",
        );
        note(
            self.ignore_unknown_dynamic_fields,
            "--ignore-unknown-dynamic-fields",
        );
        note(!self.stats_tag.is_empty(), "--stats-tag");
        note(self.socket_path.is_some(), "--socket-path");
        note(self.socket_mode.is_some(), "--socket-mode");
        note(self.enable_mutex_tracing, "--enable-mutex-tracing");
        note(
            self.file_flush_min_size_kb.is_some(),
            "--file-flush-min-size-kb",
        );
        note(
            self.log_stacktrace_single_entry,
            "--log-stacktrace-single-entry",
        );
        note(self.skip_deprecated_logs, "--skip-deprecated-logs");
        note(self.base_id_path.is_some(), "--base-id-path");
        note(
            self.skip_hot_restart_parent_stats,
            "--skip-hot-restart-parent-stats",
        );
        note(self.log_format.is_some(), "--log-format");
        note(
            self.drain_strategy == DrainStrategy::Gradual,
            "--drain-strategy gradual (drains as immediate)",
        );
        v
    }

    pub fn workers(&self) -> usize {
        self.concurrency
            .filter(|c| *c > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pilot_agent_command_line() {
        // The flags pilot-agent passes to Envoy (istio/pkg/envoy/proxy.go).
        let o = Options::try_parse_from([
            "remora",
            "-c",
            "etc/istio/proxy/envoy-rev.json",
            "--drain-time-s",
            "45",
            "--drain-strategy",
            "immediate",
            "--local-address-ip-version",
            "v4",
            "--file-flush-interval-msec",
            "1000",
            "--disable-hot-restart",
            "--allow-unknown-static-fields",
            "--log-format",
            "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t",
            "-l",
            "warning",
            "--component-log-level",
            "misc:error",
            "--concurrency",
            "2",
            "--parent-shutdown-time-s",
            "60",
            "--service-node",
            "sidecar~1.2.3.4~a.b~b.svc.cluster.local",
            "--service-cluster",
            "a.b",
        ])
        .unwrap();
        assert_eq!(o.drain_time_s, 45);
        assert_eq!(o.drain_strategy, DrainStrategy::Immediate);
        assert_eq!(o.workers(), 2);
        assert!(o.allow_unknown_static_fields);
        assert!(o.inert_flags().contains(&"--disable-hot-restart"));
        let o = Options::try_parse_from(["remora", "--mode", "validate", "--config-yaml", "{}"])
            .unwrap();
        assert_eq!(o.mode, Mode::Validate);
    }
}
