//! Remora's benchmark harness: no proxy, Remora and Envoy 1.40 side by side in one run,
//! with the same configuration and pinning (proxy alone on one core; load generator and
//! upstream on the other).
//!
//!     cargo run --release -p benches -- all            # every scenario, report + charts
//!     cargo run --release -p benches -- all --quick    # every scenario briefly (harness check)
//!     cargo run --release -p benches -- callgrind      # Remora's instructions per request
//!
//! See BENCHMARKS.md for what each scenario measures and the latest results.

mod callgrind;
mod gen;
mod measure;
mod netbed;
mod procstat;
mod report;
mod scenarios;
mod targets;
mod upstream;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use report::{Results, Scenario};
use targets::{Launch, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Every scenario against no proxy, Remora and Envoy (and callgrind when valgrind is
    /// installed).
    All,
    /// Only Remora's instructions per request under callgrind.
    Callgrind,
}

#[derive(Parser, Debug)]
#[command(about = "Remora vs Envoy vs no proxy, side by side")]
struct Args {
    #[arg(value_enum, default_value = "all")]
    mode: Mode,
    /// Run every scenario briefly and check that the harness works end to end; writes
    /// nothing into BENCHMARKS.md or docs/.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 3)]
    repetitions: u32,
    /// Requests per callgrind step (the figure compares N and 2N requests).
    #[arg(long, default_value_t = 2000)]
    callgrind_requests: u64,
    /// Core for the proxy; the generator and upstream use `--load-cpu`.
    #[arg(long, default_value_t = 0)]
    proxy_cpu: usize,
    #[arg(long, default_value_t = 1)]
    load_cpu: usize,
    /// Run only these scenarios (comma-separated); the harness check then covers only
    /// them, and the report is not written into BENCHMARKS.md.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Upstream response body (and gRPC message) size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Directory for the results JSON (and the charts of a quick run).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not write the report into BENCHMARKS.md and the charts into docs/bench/.
    #[arg(long)]
    no_write: bool,
    /// Keep the callgrind output files in this directory (for `callgrind_annotate`)
    /// instead of deleting them.
    #[arg(long)]
    callgrind_keep: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(problems) if problems.is_empty() => {}
        Ok(problems) => {
            eprintln!("\nthe harness check failed:");
            for p in problems {
                eprintln!("  - {p}");
            }
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}

fn command_line(args: &Args) -> String {
    let mut c = String::from("cargo run --release -p benches --");
    c.push_str(match args.mode {
        Mode::All => " all",
        Mode::Callgrind => " callgrind",
    });
    if args.quick {
        c.push_str(" --quick");
    }
    if args.repetitions != 3 && !args.quick {
        c.push_str(&format!(" --repetitions {}", args.repetitions));
    }
    c
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{} vCPU ({model}), Linux {kernel}", procstat::cpus())
}

/// Runs the benchmark; returns the harness check's problems (empty when all is well).
fn run(args: &Args) -> Result<Vec<String>, String> {
    let (proxy_cpu, load_cpu) = if procstat::cpus() < 2 {
        eprintln!("[bench] only one CPU: proxy, generator and upstream share it");
        (0, 0)
    } else {
        (args.proxy_cpu, args.load_cpu)
    };
    procstat::raise_nofile_limit();
    procstat::pin_current_thread(load_cpu);
    let remora = targets::remora_bin()?;
    let up = upstream::start(load_cpu, args.body_bytes)?;
    let cfg = targets::config(&up);
    let root = tests::workspace_root();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("bench-results"));
    let mut plan = if args.quick {
        scenarios::Plan::quick()
    } else {
        scenarios::Plan::full(args.repetitions.max(1))
    };
    if !args.only.is_empty() {
        plan.only = args.only.clone();
    }
    let mut settings = BTreeMap::new();
    settings.insert(
        "pinning",
        format!("proxy on CPU {proxy_cpu}; generator and upstream on CPU {load_cpu}; every proxy with --concurrency 1"),
    );
    settings.insert(
        "payload",
        format!(
            "{} B response bodies and gRPC messages; HTTP/1.1 and HTTP/2 GET, gRPC unary POST",
            args.body_bytes
        ),
    );
    let mut samples = Vec::new();
    if args.mode == Mode::All {
        let envoy = targets::envoy_bin()?;
        settings.insert(
            "windows",
            format!(
                "{:?} warm-up then {:?} measured per point",
                plan.warmup, plan.measure
            ),
        );
        let mut ctx = scenarios::Ctx {
            plan: plan.clone(),
            proxy_cpu,
            load_cpu,
            up: up.clone(),
            cfg: cfg.clone(),
            remora: Launch::remora(&remora),
            envoy: Launch::envoy(&envoy),
            body_bytes: args.body_bytes,
            samples: Vec::new(),
            skipped: Vec::new(),
        };
        scenarios::run_all(&mut ctx)?;
        samples = ctx.samples;
        plan = ctx.plan;
        for (scenario, why) in ctx.skipped {
            eprintln!("[bench] {scenario:?} skipped: {why}");
            settings.insert("skipped", format!("{scenario:?}: {why}"));
            plan.only.retain(|&s| s != scenario);
        }
    }
    let want_callgrind = args.mode == Mode::Callgrind
        || (callgrind::available()
            && (args.only.is_empty() || args.only.contains(&Scenario::Callgrind)));
    if want_callgrind {
        let n = if args.quick {
            100
        } else {
            args.callgrind_requests
        };
        eprintln!("[bench] callgrind: remora, {n} and {} requests", 2 * n);
        samples.push(callgrind::run(
            &remora,
            &cfg,
            n,
            (proxy_cpu, load_cpu),
            args.callgrind_keep.as_deref(),
        )?);
    } else if !callgrind::available() {
        eprintln!("[bench] valgrind is not installed: callgrind skipped");
    }
    let results = Results {
        quick: plan.quick,
        repetitions: plan.repetitions,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        machine: machine(),
        settings,
        samples,
    };
    let json = results.write_json(&out)?;
    let md = report::markdown::render(&results, &command_line(args));
    println!("{md}");
    println!("results: {}", json.display());
    let problems = if args.mode == Mode::All {
        check(&results, &plan)
    } else {
        Vec::new()
    };
    let publish = !args.quick && !args.no_write && args.only.is_empty() && args.mode == Mode::All;
    let chart_dir = if publish {
        root.join("docs/bench")
    } else {
        out.join("charts")
    };
    if let (Mode::All, Err(e)) = (args.mode, report::charts::font()) {
        // Without a font there is no text to draw; the rest of the harness still ran.
        eprintln!("[bench] charts skipped: {e}");
    } else if args.mode == Mode::All {
        match report::charts::write_all(&results, &chart_dir) {
            Ok(paths) => {
                for p in paths {
                    println!("chart: {}", p.display());
                }
            }
            Err(e) if args.quick => return Ok([problems, vec![e]].concat()),
            Err(e) => eprintln!("charts not written: {e}"),
        }
    }
    if publish {
        let path = root.join("BENCHMARKS.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, report::markdown::splice(&doc, &md))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("report written into {}", path.display());
    }
    Ok(problems)
}

/// The harness check: every scenario answered by every target it applies to, no errors,
/// and every figure a number.
fn check(r: &Results, plan: &scenarios::Plan) -> Vec<String> {
    let mut problems = Vec::new();
    let expect: [(Scenario, &str, &[Target]); 10] = [
        (Scenario::Latency, "completed", &Target::ALL),
        (Scenario::Peak, "completed", &Target::ALL),
        (
            Scenario::Floor,
            "completed",
            &[Target::Remora, Target::Envoy],
        ),
        (Scenario::Resilience, "completed", &Target::ALL),
        (Scenario::Interception, "completed", &Target::ALL),
        (Scenario::Grpc, "completed", &Target::ALL),
        (Scenario::TcpBulk, "bytes", &Target::ALL),
        (
            Scenario::Connections,
            "opened",
            &[Target::Remora, Target::Envoy],
        ),
        (
            Scenario::Startup,
            "ready_ms",
            &[Target::Remora, Target::Envoy],
        ),
        (Scenario::Xds, "routed_ms", &[Target::Remora, Target::Envoy]),
    ];
    for (scenario, metric, targets) in expect {
        if !plan.wants(scenario) {
            continue;
        }
        let points = r.points(scenario);
        if points.is_empty() {
            problems.push(format!("{scenario:?}: no measurements"));
        }
        for p in &points {
            if scenario == Scenario::Startup && p != "cold start" {
                continue;
            }
            for &t in targets {
                let got: Vec<_> = r.samples(scenario, p, t).collect();
                if !got.iter().any(|s| s.get(metric).is_some_and(|v| v > 0.0)) {
                    problems.push(format!("{scenario:?} / {p} / {}: no {metric}", t.name()));
                }
                for s in got {
                    if s.get("errors").is_some_and(|e| e > 0.0) {
                        problems.push(format!(
                            "{scenario:?} / {p} / {}: {} errors",
                            t.name(),
                            s.get("errors").unwrap_or_default()
                        ));
                    }
                    if let Some((k, v)) = s.metrics.iter().find(|(_, v)| !v.is_finite()) {
                        problems.push(format!("{scenario:?} / {p} / {}: {k} = {v}", t.name()));
                    }
                }
            }
        }
    }
    for proxy in [Target::Remora, Target::Envoy] {
        for s in [
            Scenario::Peak,
            Scenario::Floor,
            Scenario::Resilience,
            Scenario::Grpc,
            Scenario::Interception,
        ] {
            if !plan.wants(s) {
                continue;
            }
            for p in r.points(s) {
                if r.stat(s, &p, proxy, "cpu_us_per_req").is_none() {
                    problems.push(format!("{s:?} / {p} / {}: no CPU reading", proxy.name()));
                }
            }
        }
    }
    problems
}
