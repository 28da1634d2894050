//! Throughput of the sans-IO dynamic batcher (`server::batcher`): push + poll cycles with no
//! I/O, to show the batching core is never the bottleneck.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use server::batcher::{BatcherConfig, Decision, DynamicBatcher};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn push_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("batcher_push_poll");
    for max_batch_size in [1usize, 8, 32] {
        let requests = 1024u64;
        group.throughput(Throughput::Elements(requests));
        group.bench_with_input(
            BenchmarkId::from_parameter(max_batch_size),
            &max_batch_size,
            |b, &max_batch_size| {
                let t0 = Instant::now();
                b.iter(|| {
                    let mut batcher = DynamicBatcher::new(BatcherConfig {
                        max_batch_size,
                        max_queue_delay: Duration::from_millis(2),
                        preferred_batch_sizes: vec![],
                        max_queue: 4096,
                        max_queue_wait: None,
                    });
                    let mut dispatched = 0usize;
                    for i in 0..requests {
                        let now = t0 + Duration::from_micros(i * 10);
                        if batcher.push(i, 1, now).is_err() {
                            continue;
                        }
                        while let Decision::Dispatch(batch) = batcher.poll(now) {
                            dispatched += batch.len();
                        }
                    }
                    let end = t0 + Duration::from_secs(1);
                    while let Decision::Dispatch(batch) = batcher.poll(end) {
                        dispatched += batch.len();
                    }
                    black_box(dispatched)
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, push_poll);
criterion_main!(benches);
