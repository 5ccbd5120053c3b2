//! Cost of turning a `PUT /stream` body into stored lines, against three baselines
//! measured in the same run: parsing into owned `LogLine`s (what a naive handler
//! does), the two-pass `Vec<&RawValue>` approach, and the general path alone
//! (`parse_general`, what `parse_batch` does when its compact fast path declines).
//!
//! `cargo bench -p runlog-service --bench parse`
#![allow(clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runlog_protocol::LogLine;
use serde_json::value::RawValue;
use std::hint::black_box;

/// The allocator of the `runlog` binary, as `benches/ingest.rs` uses: the section
/// index allocates per marker line, and glibc's malloc costs more than what runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 1 000 lines with 80 bytes of text each, in the writer's key order (`level`,
/// `pos`, `out`, `time`), as the ingest benchmark sends.
fn body() -> Bytes {
    body_with(|_| "x".repeat(79) + "\\n")
}

/// 1 000 lines in the writer's key order, line `pos`'s text `text(pos)`.
fn body_with(text: impl Fn(u64) -> String) -> Bytes {
    let lines: Vec<String> = (0..1_000u64)
        .map(|pos| {
            let text = text(pos);
            format!(
                r#"{{"level":"info","pos":{pos},"out":"{text}","time":"2026-11-20T10:00:00.123Z"}}"#
            )
        })
        .collect();
    Bytes::from(format!("[{}]", lines.join(",")))
}

#[derive(serde::Deserialize)]
struct Pos {
    pos: u64,
}

fn two_pass_raw(body: &Bytes) -> Vec<(u64, Bytes)> {
    let raws: Vec<&RawValue> = serde_json::from_slice(body).unwrap();
    raws.into_iter()
        .map(|r| {
            let p: Pos = serde_json::from_str(r.get()).unwrap();
            (p.pos, body.slice_ref(r.get().as_bytes()))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let body = body();
    let mut g = c.benchmark_group("parse_batch_1000_lines");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("owned_loglines_baseline", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Vec<LogLine>>(black_box(&body)).unwrap()))
    });
    g.bench_function("rawvalue_two_pass_baseline", |b| {
        b.iter(|| black_box(two_pass_raw(black_box(&body))))
    });
    g.bench_function("parse_general_baseline", |b| {
        b.iter(|| black_box(runlog_service::ingest::parse_general(black_box(&body)).unwrap()))
    });
    g.bench_function("parse_batch", |b| {
        b.iter(|| black_box(runlog_service::ingest::parse_batch(black_box(&body)).unwrap()))
    });
    // What the section index adds to each batch before it is stored: locating each
    // line's text, or given its first byte by the parser (as `PUT /stream` does),
    // on this body and on one with every 100th line a section marker.
    use runlog_service::sections::scan::BatchScan;
    let marked = body_with(|pos| match pos % 200 {
        0 => format!("::group::section {pos:<60}\\n"),
        100 => format!("::endgroup::{:<67}\\n", ""),
        _ => "x".repeat(79) + "\\n",
    });
    for (name, body) in [("plain", &body), ("markers_1pct", &marked)] {
        let (batch, firsts) = runlog_service::ingest::Incremental::default()
            .finish_with_out_first(body)
            .unwrap();
        g.bench_function(format!("section_scan_{name}"), |b| {
            b.iter(|| black_box(BatchScan::of(black_box(&batch))))
        });
        g.bench_function(format!("section_scan_out_first_{name}"), |b| {
            b.iter(|| black_box(BatchScan::of_with(black_box(&batch), firsts.as_deref())))
        });
    }
    g.finish();
    index_batches(c);
}

/// The whole per-batch work of the section index on the memory store: the scan,
/// then `after_append` (the index moved past a batch without markers, or its
/// markers given to the tracker), for 100 batches of 1 000 lines in a row of one
/// stream (a new stream each iteration). Against `parse_batch` above, and the
/// ≈ 100 µs of service CPU a 1 000-line batch costs end to end (`benches/ingest.rs`).
fn index_batches(c: &mut Criterion) {
    use runlog_service::sections::Sections;
    use runlog_service::store::memory::{MemoryLimits, MemoryStreamStore};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemoryStreamStore::new(MemoryLimits::default());
    let sections = Sections::default();
    let mut g = c.benchmark_group("section_index_100_batches");
    g.throughput(Throughput::Elements(100_000));
    for (name, marked) in [("plain", false), ("markers_1pct", true)] {
        let parsed: Vec<_> = (0..100u64)
            .map(|b| {
                let body = batch_at(b * 1_000, marked);
                runlog_service::ingest::Incremental::default()
                    .finish_with_out_first(&body)
                    .unwrap()
            })
            .collect();
        let mut stream = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                stream += 1;
                let id = runlog_service::store::StreamId {
                    account: "bench".parse().unwrap(),
                    key: format!("s{stream}").parse().unwrap(),
                };
                rt.block_on(async {
                    for (batch, firsts) in &parsed {
                        let scan = sections.scan(batch, firsts.as_deref()).unwrap();
                        let next = scan.run.unwrap().1 + 1;
                        sections
                            .after_append(&store, &id, scan, next)
                            .await
                            .unwrap();
                    }
                    sections.forget(&id).await.unwrap();
                })
            })
        });
    }
    g.finish();
}

/// 1 000 lines from `first` in the writer's key order; with `marked`, every 100th
/// a section marker (opening and closing in turn), as `benches/ingest.rs` sends.
fn batch_at(first: u64, marked: bool) -> Bytes {
    let lines: Vec<String> = (first..first + 1_000)
        .map(|pos| {
            let text = match pos % 200 {
                0 if marked => format!("::group::section {pos:<60}\\n"),
                100 if marked => format!("::endgroup::{:<67}\\n", ""),
                _ => "x".repeat(79) + "\\n",
            };
            format!(
                r#"{{"level":"info","pos":{pos},"out":"{text}","time":"2026-11-20T10:00:00.123Z"}}"#
            )
        })
        .collect();
    Bytes::from(format!("[{}]", lines.join(",")))
}

criterion_group!(benches, bench);
criterion_main!(benches);
