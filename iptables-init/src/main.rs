//! `iptables-init` command line: parses and validates istio-iptables' flags and
//! environment. Rule generation is not built yet, so it stops after validation.

use clap::Parser;
use iptables_init::{Args, Host, Settings};

fn main() {
    let args = Args::parse();
    let env = |k: &str| std::env::var(k).ok();
    match Settings::new(&args, &env, Host::default()) {
        Ok(_) => {
            eprintln!(
                "iptables-init: the flags are valid; rule generation and apply are not built yet"
            );
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("iptables-init: {e}");
            std::process::exit(2);
        }
    }
}
