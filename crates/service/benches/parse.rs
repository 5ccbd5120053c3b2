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

/// 1 000 lines with 80 bytes of text each, in the writer's key order (`level`,
/// `pos`, `out`, `time`), as the ingest benchmark sends.
fn body() -> Bytes {
    let text = "x".repeat(79) + "\\n";
    let lines: Vec<String> = (0..1_000u64)
        .map(|pos| {
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
    // What the section index adds to each batch before it is stored.
    let batch = runlog_service::ingest::parse_batch(&body).unwrap();
    g.bench_function("section_scan", |b| {
        b.iter(|| {
            black_box(runlog_service::sections::scan::BatchScan::of(black_box(
                &batch,
            )))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
