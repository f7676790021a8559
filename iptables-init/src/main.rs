//! `iptables-init`: istio-iptables' command line. Validates the flags and environment,
//! generates the rules, and prints (`--dry-run`), applies, or removes (`--cleanup`)
//! them; `--run-validation` then proves that redirection works.
//!
//! Exit status: 0 done, 1 the system refused (iptables missing, no privilege, rules
//! refused, validation failed), 2 bad flags or environment (nothing applied).

use std::os::unix::fs::MetadataExt;

use clap::Parser;
use iptables_init::{apply, capture, host, routes, validation, Args, Settings};

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("iptables-init: {msg}");
    std::process::exit(1);
}

fn main() {
    let args = Args::parse();
    let env = |k: &str| std::env::var(k).ok();
    let settings = match Settings::new(&args, &env, host::detect(&env)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iptables-init: {e}");
            std::process::exit(2);
        }
    };
    let rules = capture::rules(&settings);
    if settings.dry_run {
        print!("{}", rules.v4.restore());
        if rules.ipv6() {
            print!("{}", rules.v6.restore());
        }
        return;
    }
    if settings.cleanup {
        if let Err(e) = apply::cleanup(&rules) {
            fail(e);
        }
        if let Err(e) = routes::cleanup(&settings) {
            fail(e);
        }
        eprintln!("iptables-init: removed the redirection rules");
        return;
    }
    if !settings.skip_rule_apply {
        if let Err(e) = routes::setup(&settings) {
            fail(e);
        }
        if let Err(e) = apply::apply(&rules) {
            let _ = routes::cleanup(&settings);
            fail(e);
        }
        eprintln!(
            "iptables-init: applied the redirection rules (IPv6: {})",
            if rules.ipv6() { "yes" } else { "no" }
        );
    }
    if settings.run_validation {
        // The owner iptables matches: this process's effective UID (owner of /proc/self).
        let uid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
        let target = validation::target(&settings, uid);
        match validation::run(&settings, target) {
            Ok(reply) => {
                eprintln!("iptables-init: validation passed ({target} answered '{reply}')")
            }
            Err(e) => fail(format!("validation failed: {e}")),
        }
    }
}
