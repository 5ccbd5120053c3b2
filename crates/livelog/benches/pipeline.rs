//! Throughput of the writer's CPU stages: line assembly and secret masking, each next
//! to a baseline measured in the same run (a plain newline split; a line copy).
//!
//! `cargo bench -p livelog --bench pipeline`
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use livelog::assemble::LineAssembler;
use livelog::mask::Masker;
use std::hint::black_box;

fn input() -> Vec<u8> {
    (0..100_000u64)
        .flat_map(|i| format!("{i:012} {}\n", "l".repeat(66)).into_bytes())
        .collect()
}

fn assemble(c: &mut Criterion) {
    let data = input();
    let mut g = c.benchmark_group("assemble");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("baseline_split_lines_to_strings", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for l in data.split(|b| *b == b'\n') {
                n += String::from_utf8_lossy(l).into_owned().len();
            }
            black_box(n)
        })
    });
    g.bench_function("line_assembler_64k_chunks", |b| {
        b.iter(|| {
            let mut a = LineAssembler::new(64 * 1024);
            let mut n = 0usize;
            for chunk in data.chunks(64 * 1024) {
                a.push(chunk, &mut |l| n += l.text.len());
            }
            black_box(n)
        })
    });
    g.finish();
}

fn mask(c: &mut Criterion) {
    let lines: Vec<String> = (0..100_000u64)
        .map(|i| format!("{i:012} {}\n", "l".repeat(66)))
        .collect();
    let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let secrets: Vec<String> = (0..20)
        .map(|i| format!("secret-value-{i:04}-abcdef"))
        .collect();
    let masker = Masker::new(&secrets);
    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("baseline_clone_lines", |b| {
        b.iter(|| {
            let mut n = 0;
            for l in &lines {
                n += black_box(l.clone()).len();
            }
            n
        })
    });
    g.bench_function("mask_20_secrets_no_match", |b| {
        b.iter(|| {
            let mut n = 0;
            for l in &lines {
                let mut s = l.clone();
                masker.mask(&mut s);
                n += s.len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, assemble, mask);
criterion_main!(benches);
