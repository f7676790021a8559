//! Results: every measurement as a `Sample`, summaries across repetitions, and the three
//! outputs (JSON, a markdown report, PNG charts).

pub mod charts;
mod interception;
pub mod markdown;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::measure::Usage;
use crate::targets::Target;

/// One measurement of one target at one point of one scenario in one repetition.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub scenario: Scenario,
    /// What was measured within the scenario, e.g. `http1 4 conns @ 1000 rps`.
    pub point: String,
    pub target: Target,
    pub rep: u32,
    pub metrics: BTreeMap<&'static str, f64>,
    /// The machine's steal time during the window, as a share of all CPU time.
    pub steal_fraction: f64,
}

impl Sample {
    pub fn new(scenario: Scenario, point: impl Into<String>, target: Target, rep: u32) -> Sample {
        Sample {
            scenario,
            point: point.into(),
            target,
            rep,
            metrics: BTreeMap::new(),
            steal_fraction: 0.0,
        }
    }

    pub fn set(&mut self, name: &'static str, v: f64) -> &mut Sample {
        self.metrics.insert(name, v);
        self
    }

    pub fn set_opt(&mut self, name: &'static str, v: Option<f64>) -> &mut Sample {
        if let Some(v) = v {
            self.metrics.insert(name, v);
        }
        self
    }

    pub fn usage(&mut self, u: &Usage) -> &mut Sample {
        self.steal_fraction = u.steal_fraction;
        self
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }

    pub fn stolen(&self) -> bool {
        self.steal_fraction > Usage::STEAL_LIMIT
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Open-loop HTTP/1.1 latency at fixed rates.
    Latency,
    /// Closed-loop peak throughput on one core.
    Peak,
    /// The peak HTTP/1.1 load relayed by each proxy's `tcp_proxy`: what the socket work
    /// alone costs, with no HTTP processing (the floor under the CPU goals).
    Floor,
    /// gRPC unary, 100 concurrent streams.
    Grpc,
    /// TCP bulk transfer through tcp_proxy.
    TcpBulk,
    /// Many idle keep-alive connections.
    Connections,
    /// Time to ready and idle memory.
    Startup,
    /// xDS: a mesh-sized push applied (1,000 and 10,000 clusters), one endpoint change.
    Xds,
    /// Instructions per request under callgrind.
    Callgrind,
    /// HTTP/1.1 and TCP through iptables interception in a pod network namespace.
    Interception,
    /// Closed-loop HTTP/1.1 on a plain route and on one with retries, circuit breakers,
    /// outlier detection and least-request balancing configured (no faults firing).
    Resilience,
}

impl Scenario {
    /// The scenarios `all` runs against the three targets.
    pub const MEASURED: [Scenario; 10] = [
        Scenario::Latency,
        Scenario::Peak,
        Scenario::Floor,
        Scenario::Resilience,
        Scenario::Grpc,
        Scenario::TcpBulk,
        Scenario::Interception,
        Scenario::Connections,
        Scenario::Startup,
        Scenario::Xds,
    ];
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub quick: bool,
    pub repetitions: u32,
    /// Seconds since the epoch when the run started.
    pub started_unix: u64,
    pub machine: String,
    pub settings: BTreeMap<&'static str, String>,
    pub samples: Vec<Sample>,
}

/// Median and range of one metric over repetitions.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(mut v: Vec<f64>) -> Option<Stat> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

impl Results {
    pub fn samples<'a>(
        &'a self,
        scenario: Scenario,
        point: &'a str,
        target: Target,
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.scenario == scenario && s.point == point && s.target == target)
    }

    /// The points of a scenario, in the order they were first measured.
    pub fn points(&self, scenario: Scenario) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.samples.iter().filter(|s| s.scenario == scenario) {
            if !out.contains(&s.point) {
                out.push(s.point.clone());
            }
        }
        out
    }

    pub fn stat(
        &self,
        scenario: Scenario,
        point: &str,
        target: Target,
        metric: &str,
    ) -> Option<Stat> {
        Stat::of(
            self.samples(scenario, point, target)
                .filter_map(|s| s.get(metric))
                .collect(),
        )
    }

    /// `metric` of `target` minus the no-proxy value: the difference of the medians over
    /// repetitions. (Differences paired by repetition swing with the machine's own tail
    /// jitter, which at low rates is larger than what a proxy adds.)
    pub fn added(
        &self,
        scenario: Scenario,
        point: &str,
        target: Target,
        metric: &str,
    ) -> Option<f64> {
        let base = self.stat(scenario, point, Target::Direct, metric)?;
        Some(self.stat(scenario, point, target, metric)?.median - base.median)
    }

    pub fn any_stolen(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.stolen()).collect()
    }

    /// Writes the JSON form into `dir`, returning its path.
    pub fn write_json(&self, dir: &Path) -> Result<PathBuf, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("results-{}.json", self.started_unix));
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Stat::of(vec![3.0, 1.0, 2.0]).expect("stat");
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Stat::of(vec![4.0, 1.0, 2.0, 3.0]).expect("stat");
        assert_eq!(s.median, 2.5);
        assert!(Stat::of(vec![f64::NAN]).is_none());
    }

    #[test]
    fn added_latency_is_the_difference_of_medians() {
        let mut r = Results {
            quick: true,
            repetitions: 2,
            started_unix: 0,
            machine: String::new(),
            settings: BTreeMap::new(),
            samples: Vec::new(),
        };
        for (t, rep, v) in [
            (Target::Direct, 0, 100.0),
            (Target::Direct, 1, 200.0),
            (Target::Direct, 2, 900.0),
            (Target::Remora, 0, 230.0),
            (Target::Remora, 1, 250.0),
            (Target::Remora, 2, 260.0),
        ] {
            let mut s = Sample::new(Scenario::Latency, "p", t, rep);
            s.set("p99_us", v);
            r.samples.push(s);
        }
        let a = r
            .added(Scenario::Latency, "p", Target::Remora, "p99_us")
            .expect("added");
        assert_eq!(a, 50.0);
    }
}
