//! Remora's benchmark harness: no proxy, Remora and Envoy 1.40 side by side in one run,
//! with the same pinning (proxy alone on core 0; load generator and upstream on core 1).
//!
//!     cargo run --release -p benches -- http1
//!
//! Prints throughput, CPU microseconds per request (from /proc/<pid>/task/*/schedstat),
//! p50/p99 latency (closed loop), idle and peak RSS, time to ready, and Remora/Envoy
//! ratios; writes the results as JSON under bench-results/.

mod load;
mod procstat;
mod targets;
mod upstream;

use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Remora vs Envoy vs no proxy, side by side")]
struct Args {
    /// Scenario: `http1` (HTTP/1.1 keep-alive, small response).
    #[arg(default_value = "http1")]
    scenario: String,
    #[arg(long, default_value_t = 50)]
    connections: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Core for the proxy; the generator and upstream use the other one.
    #[arg(long, default_value_t = 0)]
    proxy_cpu: usize,
    #[arg(long, default_value_t = 1)]
    load_cpu: usize,
    /// Run only these targets (comma-separated: direct, remora, envoy, haproxy, tcp-floor).
    /// HAProxy (measured only when installed) and the L4 relay floor are reference points.
    #[arg(long, value_delimiter = ',', default_values_t = ["direct".to_string(), "remora".to_string(), "envoy".to_string(), "haproxy".to_string(), "tcp-floor".to_string()])]
    only: Vec<String>,
}

#[derive(Debug, Clone)]
struct Row {
    target: &'static str,
    rps: f64,
    cpu_us_per_req: Option<f64>,
    runqueue_us_per_req: Option<f64>,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
    idle_rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    ready_ms: Option<f64>,
}

fn main() {
    let args = Args::parse();
    if args.scenario != "http1" {
        eprintln!("unknown scenario '{}'; available: http1", args.scenario);
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let want = |t: &str| args.only.iter().any(|o| o == t);
    let remora = if want("remora") {
        Some(targets::remora_bin()?)
    } else {
        None
    };
    let envoy = if want("envoy") {
        Some(targets::envoy_bin()?)
    } else {
        None
    };
    procstat::pin_current_thread(args.load_cpu);
    let upstream = upstream::start(args.load_cpu, args.body_bytes);
    let cfg = targets::config(upstream);
    let warmup = Duration::from_secs(args.warmup_seconds);
    let window = Duration::from_secs(args.seconds);
    let steal_before = procstat::steal_ticks();

    let mut rows = Vec::new();
    if want("direct") {
        let direct = load::run(
            args.load_cpu,
            upstream,
            args.connections,
            warmup,
            window,
            || {},
        );
        rows.push(row("no proxy", &direct, None, None, None, None, None));
    }
    if let Some(bin) = &remora {
        let p = targets::start("remora", bin, &cfg, args.proxy_cpu, &[])?;
        rows.push(measure(args, "remora", &p, warmup, window));
    }
    if let Some(bin) = &envoy {
        let p = targets::start(
            "envoy",
            bin,
            &cfg,
            args.proxy_cpu,
            &["--disable-hot-restart"],
        )?;
        rows.push(measure(args, "envoy", &p, warmup, window));
    }
    if want("tcp-floor") {
        if let Some(bin) = &remora {
            let floor = targets::tcp_floor_config(upstream);
            let p = targets::start("remora-tcp", bin, &floor, args.proxy_cpu, &[])?;
            rows.push(measure(
                args,
                "L4 relay floor (remora tcp_proxy)",
                &p,
                warmup,
                window,
            ));
        }
    }
    if want("haproxy") {
        match targets::start_haproxy(upstream, args.proxy_cpu)? {
            Some(p) => rows.push(measure(args, "haproxy (reference)", &p, warmup, window)),
            None => eprintln!("haproxy is not installed; its reference row is skipped"),
        }
    }
    let steal = procstat::steal_ticks().saturating_sub(steal_before);
    report(args, &rows, steal);
    Ok(())
}

/// Runs the load against a started proxy and reads its CPU, run-queue and memory.
fn measure(
    args: &Args,
    name: &'static str,
    p: &targets::ProxyProc,
    warmup: Duration,
    window: Duration,
) -> Row {
    std::thread::sleep(Duration::from_millis(200));
    let pid = p.child.id();
    let (idle_rss, _) = procstat::memory_kib(pid);
    let marks = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let m = marks.clone();
    let result = load::run(
        args.load_cpu,
        p.listener,
        args.connections,
        warmup,
        window,
        move || {
            if let Ok(mut g) = m.lock() {
                *g = (procstat::cpu_ns(pid), procstat::runqueue_ns(pid));
            }
        },
    );
    let (cpu_end, rq_end) = (procstat::cpu_ns(pid), procstat::runqueue_ns(pid));
    let (cpu_start, rq_start) = marks.lock().map(|g| *g).unwrap_or_default();
    let (_, hwm) = procstat::memory_kib(pid);
    let per_req =
        |ns: u64| (result.requests > 0).then(|| ns as f64 / 1000.0 / result.requests as f64);
    row(
        name,
        &result,
        per_req(cpu_end.saturating_sub(cpu_start)),
        per_req(rq_end.saturating_sub(rq_start)),
        Some(idle_rss),
        Some(hwm),
        Some(p.ready_after.as_secs_f64() * 1000.0),
    )
}

fn row(
    target: &'static str,
    r: &load::LoadResult,
    cpu: Option<f64>,
    rq: Option<f64>,
    idle: Option<u64>,
    peak: Option<u64>,
    ready: Option<f64>,
) -> Row {
    Row {
        target,
        rps: r.requests as f64 / r.elapsed.as_secs_f64(),
        cpu_us_per_req: cpu,
        runqueue_us_per_req: rq,
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        errors: r.errors,
        idle_rss_kib: idle,
        peak_rss_kib: peak,
        ready_ms: ready,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn report(args: &Args, rows: &[Row], steal_ticks: u64) {
    println!(
        "\nscenario http1: HTTP/1.1 keep-alive, {} connections, {}-byte responses, {} s measured after {} s warm-up; proxy on cpu {}, load+upstream on cpu {}",
        args.connections, args.body_bytes, args.seconds, args.warmup_seconds, args.proxy_cpu, args.load_cpu
    );
    println!("\n| target | req/s | CPU µs/req | run-queue µs/req | p50 µs | p99 µs | errors | idle RSS MiB | peak RSS MiB | ready ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.target,
            r.rps,
            opt(r.cpu_us_per_req, 1),
            opt(r.runqueue_us_per_req, 1),
            r.p50_us,
            r.p99_us,
            r.errors,
            opt(r.idle_rss_kib.map(|k| k as f64 / 1024.0), 1),
            opt(r.peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
            opt(r.ready_ms, 1),
        );
    }
    let find = |t: &str| rows.iter().find(|r| r.target == t);
    if let (Some(r), Some(e)) = (find("remora"), find("envoy")) {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!(
            "\nRemora / Envoy: CPU per request {}, throughput {:.2}, p99 {:.2}, idle RSS {}",
            ratio(r.cpu_us_per_req, e.cpu_us_per_req),
            r.rps / e.rps,
            r.p99_us as f64 / e.p99_us.max(1) as f64,
            ratio(
                r.idle_rss_kib.map(|v| v as f64),
                e.idle_rss_kib.map(|v| v as f64)
            )
        );
    }
    if steal_ticks > 0 {
        println!("\nwarning: the machine reported {steal_ticks} ticks of steal time during the run; numbers may be disturbed");
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "target": r.target, "rps": r.rps, "cpu_us_per_req": r.cpu_us_per_req,
                "runqueue_us_per_req": r.runqueue_us_per_req, "p50_us": r.p50_us, "p99_us": r.p99_us,
                "errors": r.errors, "idle_rss_kib": r.idle_rss_kib, "peak_rss_kib": r.peak_rss_kib, "ready_ms": r.ready_ms,
            })
        })
        .collect();
    let dir = targets::workspace_root().join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = dir.join(format!("http1-{stamp}.json"));
    let doc = serde_json::json!({"scenario": "http1", "connections": args.connections, "seconds": args.seconds, "steal_ticks": steal_ticks, "rows": json});
    if std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default()).is_ok() {
        println!("\nresults: {}", path.display());
    }
}
