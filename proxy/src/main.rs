//! `remora`: start it as you would start `envoy`.

use std::process::ExitCode;

use clap::Parser;
use remora::cli::{Mode, Options};
use remora::config::bootstrap::{self, Source};
use remora::config::load::UnknownFields;

fn main() -> ExitCode {
    let options = Options::parse();
    if options.version {
        println!(
            "\nremora  version: {}/Clean/RELEASE/rustls\n",
            remora::server::VERSION
        );
        return ExitCode::SUCCESS;
    }
    if options.hot_restart_version {
        println!("disabled");
        return ExitCode::SUCCESS;
    }
    let log = match remora::logging::init(
        &options.log_level,
        options.component_log_level.as_deref(),
        options.log_path.as_deref(),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for flag in options.inert_flags() {
        tracing::debug!(flag, "accepted for compatibility; has no effect in Remora");
    }
    let source = Source {
        path: options.config_path.as_deref(),
        yaml: options.config_yaml.as_deref(),
        unknown_fields: Some(
            if options.allow_unknown_static_fields || options.allow_unknown_fields {
                UnknownFields::Warn
            } else {
                UnknownFields::Reject
            },
        ),
    };
    let what = options
        .config_path
        .as_ref()
        .map_or_else(|| "--config-yaml".to_string(), |p| p.display().to_string());
    let loaded = match bootstrap::load(&source) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error initializing configuration '{what}': {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("ignoring unknown field {w}");
    }
    match options.mode {
        Mode::Validate => {
            println!("configuration '{what}' OK");
            return ExitCode::SUCCESS;
        }
        Mode::InitOnly => return ExitCode::SUCCESS,
        Mode::Serve => {}
    }
    if let Some(ms) = options.file_flush_interval_msec {
        remora::access_log::sink::set_flush_interval(ms);
    }
    let server = remora::server::Server::new(options, loaded, log);
    remora::server::release_config_memory();
    let result = remora::runtime::run(server);
    remora::access_log::sink::flush_all();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
