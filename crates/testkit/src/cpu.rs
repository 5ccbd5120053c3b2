//! CPU time this process's threads have used, for benchmarks that report what a
//! run cost besides how fast it went (CPU time moves less than throughput when
//! other processes share the cores).

use std::time::Duration;

/// Time on the CPU of this process's live threads — those named `name` (their
/// `comm`), or all of them — from `/proc/self/task/*/schedstat` (nanoseconds; the
/// 10 ms ticks of `stat` moved single runs by ±5 %). Threads that already ended are
/// not counted; where `/proc` cannot be read, zero.
pub fn threads_cpu(name: Option<&str>) -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    let nanos = tasks
        .flatten()
        .filter(|task| {
            name.is_none_or(|name| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim() == name)
            })
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        // Time on the CPU, time waiting for it, slices run.
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_s_time_is_counted_and_an_unknown_name_has_none() {
        // Spins until 20 ms more are counted: under load the thread may wait for a
        // core, so the wall-clock deadline is only there to end a broken count.
        let before = threads_cpu(None);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while threads_cpu(None) < before + Duration::from_millis(20) {
            assert!(std::time::Instant::now() < deadline, "no CPU time counted");
            for i in 0..100_000u64 {
                std::hint::black_box(i);
            }
        }
        assert_eq!(threads_cpu(Some("runlog-no-such-thread")), Duration::ZERO);
    }
}
