//! [`MachineMonitor`]: the machine's CPU and memory use, sampled while a stage lives.
//!
//! lite-engine answers `/destroy` with `os_stats` (averages, peaks and graphs of the
//! machine's CPU and memory use over the stage) and, given a
//! `memory_metrics_log_key`, streams one NDJSON line of figures per sample and a
//! summary line at the end. The figures are the whole machine's, read from
//! `/proc/stat` and `/proc/meminfo` (Linux); where they cannot be read, no sample is
//! taken and the answer's figures are zeros.
//!
//! The sampler is one task per stage; a stream write never waits (`try_write_line`):
//! figures are dropped, with the writer's count, rather than slow the sampler.

use livelog::Writer;
use runlog_protocol::engine::WriterReport;
use runlog_protocol::lite::{Graph, OsStats, Point};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One reading of `/proc`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    /// CPU jiffies spent busy and in total since boot.
    busy: u64,
    total: u64,
    mem_total_kb: u64,
    mem_available_kb: u64,
}

/// One sample: use since the previous reading.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    secs: f64,
    cpu_pct: f64,
    mem_pct: f64,
}

struct Samples {
    started: Instant,
    last: Option<Reading>,
    taken: Vec<Sample>,
    cpu_cores: u32,
    mem_total_kb: u64,
    stream: Option<Writer>,
}

/// Samples the machine until [`MachineMonitor::stop`].
pub struct MachineMonitor {
    samples: Arc<Mutex<Samples>>,
    cancel: CancellationToken,
}

impl MachineMonitor {
    /// Starts sampling every `interval`, writing each sample to `stream` if given.
    pub fn start(interval: Duration, stream: Option<Writer>) -> MachineMonitor {
        let samples = Arc::new(Mutex::new(Samples {
            started: Instant::now(),
            last: read_proc(),
            taken: Vec::new(),
            cpu_cores: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            mem_total_kb: 0,
            stream,
        }));
        let cancel = CancellationToken::new();
        let (s, c) = (samples.clone(), cancel.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => take_sample(&s),
                    () = c.cancelled() => break,
                }
            }
        });
        MachineMonitor { samples, cancel }
    }

    /// Stops sampling (after one last sample), writes the summary line and closes
    /// the stream; answers the stage's figures and the stream's report.
    pub async fn stop(&self) -> (OsStats, Option<WriterReport>) {
        self.cancel.cancel();
        take_sample(&self.samples);
        let (stats, stream) = {
            let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            let stats = summarize(&s);
            if let Some(w) = &s.stream {
                w.try_write_line("info", &summary_line(&s, &stats));
            }
            (stats, s.stream.take())
        };
        let report = match stream {
            Some(w) => Some(w.close().await),
            None => None,
        };
        (stats, report)
    }
}

impl Drop for MachineMonitor {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn take_sample(samples: &Mutex<Samples>) {
    let Some(now) = read_proc() else { return };
    let mut s = samples.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(last) = s.last.replace(now) else {
        return;
    };
    let total = now.total.saturating_sub(last.total);
    let busy = now.busy.saturating_sub(last.busy);
    let cpu_pct = if total == 0 {
        0.0
    } else {
        busy as f64 * 100.0 / total as f64
    };
    let mem_pct = if now.mem_total_kb == 0 {
        0.0
    } else {
        now.mem_total_kb.saturating_sub(now.mem_available_kb) as f64 * 100.0
            / now.mem_total_kb as f64
    };
    let sample = Sample {
        secs: s.started.elapsed().as_secs_f64(),
        cpu_pct,
        mem_pct,
    };
    s.mem_total_kb = now.mem_total_kb;
    s.taken.push(sample);
    if let Some(w) = &s.stream {
        let line = serde_json::json!({
            "time": runlog_protocol::now_rfc3339(),
            "totalMemory": gb(now.mem_total_kb),
            "totalCPU": s.cpu_cores,
            "avaMemory": gb(now.mem_available_kb),
            "avalCPU": round2(100.0 - cpu_pct),
        });
        w.try_write_line("info", &line.to_string());
    }
}

fn gb(kb: u64) -> f64 {
    round2(kb as f64 / (1024.0 * 1024.0))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn summarize(s: &Samples) -> OsStats {
    let n = s.taken.len().max(1) as f64;
    let avg = |f: fn(&Sample) -> f64| round2(s.taken.iter().map(f).sum::<f64>() / n);
    let max = |f: fn(&Sample) -> f64| round2(s.taken.iter().map(f).fold(0.0, f64::max));
    let graph = |f: fn(&Sample) -> f64, y: &str| Graph {
        points: s
            .taken
            .iter()
            .map(|p| Point {
                x: round2(p.secs),
                y: round2(f(p)),
            })
            .collect(),
        xmetric: "seconds".to_owned(),
        ymetric: y.to_owned(),
    };
    OsStats {
        total_mem_mb: round2(s.mem_total_kb as f64 / 1024.0),
        cpu_cores: s.cpu_cores,
        avg_mem_usage_pct: avg(|p| p.mem_pct),
        avg_cpu_usage_pct: avg(|p| p.cpu_pct),
        max_mem_usage_pct: max(|p| p.mem_pct),
        max_cpu_usage_pct: max(|p| p.cpu_pct),
        mem_graph: graph(|p| p.mem_pct, "memory percent"),
        cpu_graph: graph(|p| p.cpu_pct, "cpu percent"),
    }
}

fn summary_line(s: &Samples, stats: &OsStats) -> String {
    let mut cpu: Vec<f64> = s.taken.iter().map(|p| p.cpu_pct).collect();
    cpu.sort_by(f64::total_cmp);
    let p90 = cpu
        .get((cpu.len() * 9).div_ceil(10).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    serde_json::json!({
        "osStatsSummary": true,
        "peakCPUUsagePct": stats.max_cpu_usage_pct,
        "avgCPUUsagePct": stats.avg_cpu_usage_pct,
        "p90CPUUsagePct": round2(p90),
        "totalMemory": gb(s.mem_total_kb),
        "totalCPU": s.cpu_cores,
        "peakMemUsagePct": stats.max_mem_usage_pct,
        "avgMemUsagePct": stats.avg_mem_usage_pct,
    })
    .to_string()
}

fn read_proc() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_proc(&stat, &meminfo)
}

fn parse_proc(stat: &str, meminfo: &str) -> Option<Reading> {
    let cpu: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))?
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Reading {
        busy: total.saturating_sub(idle),
        total,
        mem_total_kb: field("MemTotal:")?,
        mem_available_kb: field("MemAvailable:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let r = parse_proc(
            "cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 1 1 1 1\n",
            "MemTotal:       2048 kB\nMemFree: 1 kB\nMemAvailable:    512 kB\n",
        )
        .expect("parsed");
        assert_eq!(
            r,
            Reading {
                busy: 20,
                total: 100,
                mem_total_kb: 2048,
                mem_available_kb: 512
            }
        );
        assert!(parse_proc("", "").is_none());
    }

    #[tokio::test]
    async fn a_stopped_monitor_answers_figures_of_this_machine() {
        let m = MachineMonitor::start(Duration::from_secs(3600), None);
        let (stats, report) = m.stop().await;
        assert!(report.is_none());
        if read_proc().is_some() {
            assert!(stats.total_mem_mb > 0.0, "{stats:?}");
            assert_eq!(stats.mem_graph.points.len(), 1);
        }
        assert!(stats.cpu_cores >= 1);
    }
}
