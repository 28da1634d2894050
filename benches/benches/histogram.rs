//! Cost of loadgen's latency recording: one HdrHistogram record (µs, 3 significant
//! digits, auto-resizing, as `loadgen::record::new_histogram`), merging per-window
//! histograms into a phase, and reading the percentiles a report prints.
//! Run: `cargo bench -p benches --bench histogram`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loadgen::hdrhistogram::Histogram;
use loadgen::record::{new_histogram, HistogramSummary};

/// Latency-like values: mostly 100 µs–2 ms, a tail to 1 s (deterministic LCG).
fn values(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let r = x >> 33;
            if r % 100 == 0 {
                r % 1_000_000
            } else {
                100 + r % 1_900
            }
        })
        .collect()
}

fn filled(vals: &[u64]) -> Histogram<u64> {
    let mut h = new_histogram();
    for &v in vals {
        h.record(v).expect("auto-resizing");
    }
    h
}

fn bench(c: &mut Criterion) {
    let vals = values(100_000);
    let mut g = c.benchmark_group("histogram");
    g.throughput(Throughput::Elements(vals.len() as u64));
    g.bench_function("record_100k", |b| {
        b.iter_batched_ref(
            new_histogram,
            |h| {
                for &v in &vals {
                    h.record(black_box(v)).expect("auto-resizing");
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // 60 one-second windows merged into a one-minute phase.
    let windows: Vec<Histogram<u64>> = vals.chunks(vals.len() / 60).map(filled).collect();
    let mut g = c.benchmark_group("histogram");
    g.throughput(Throughput::Elements(windows.len() as u64));
    g.bench_function("merge_60_windows", |b| {
        b.iter(|| {
            let mut phase = new_histogram();
            for w in &windows {
                phase.add(w).expect("same precision");
            }
            phase
        })
    });
    g.finish();

    let phase = filled(&vals);
    c.bench_function("histogram/summary_percentiles", |b| {
        b.iter(|| HistogramSummary::of(black_box(&phase)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
