//! Ring all-reduce bandwidth against the link it runs on: one 64 MiB f32 buffer reduced by
//! N = 2 and 4 ranks (threads in this process, each with its own loopback TCP connections,
//! as `trainer::comm::TcpRing` uses between worker processes), and the single-stream
//! loopback TCP bandwidth measured in the same run.
//!
//! Figures as nccl-tests defines them: `algbw = bytes / time`,
//! `busbw = algbw × 2(N − 1)/N`. Printed after each group as one `allreduce_figures` JSON
//! line; criterion's own throughput line is algbw.
//! Run: `cargo bench -p benches --bench allreduce` (or `benches/scripts/trainer-figures.sh`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use trainer::comm::{loopback_ring, Communicator};

const BYTES: usize = 64 << 20;

/// Single-stream loopback TCP: bytes per second for `total` bytes written in 4 MiB pieces.
fn tcp_bandwidth(total: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 4 << 20];
        let mut got = 0;
        while got < total {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "early EOF");
            got += n;
        }
    });
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let piece = vec![1u8; 4 << 20];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&piece).expect("write");
        sent += piece.len();
    }
    reader.join().expect("reader");
    total as f64 / t.elapsed().as_secs_f64()
}

/// Wall time of `iters` all-reduces of `BYTES` on a ring of `world` ranks.
fn time_all_reduce(
    rings: &mut [trainer::comm::TcpRing],
    bufs: &mut [Vec<f32>],
    iters: u64,
) -> Duration {
    let t = Instant::now();
    std::thread::scope(|s| {
        for (ring, buf) in rings.iter_mut().zip(bufs.iter_mut()) {
            s.spawn(move || {
                for _ in 0..iters {
                    ring.all_reduce_sum(buf).expect("all-reduce");
                }
            });
        }
    });
    t.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("allreduce_64MiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(BYTES as u64));
    for world in [2usize, 4] {
        // Measured right before each group, so a change in other load between groups does
        // not skew the ratio.
        let tcp = (0..3).map(|_| tcp_bandwidth(1 << 30)).fold(0.0, f64::max);
        let mut rings = loopback_ring(world, 1).expect("ring");
        let mut bufs: Vec<Vec<f32>> = (0..world)
            .map(|r| vec![r as f32 * 1e-3; BYTES / 4])
            .collect();
        let mut samples = Vec::new();
        group.bench_function(format!("N={world}"), |b| {
            b.iter_custom(|iters| {
                let d = time_all_reduce(&mut rings, &mut bufs, iters);
                samples.push(d.as_secs_f64() / iters as f64);
                d
            })
        });
        samples.sort_by(f64::total_cmp);
        let t = samples[samples.len() / 2];
        let algbw = BYTES as f64 / t;
        let busbw = algbw * 2.0 * (world - 1) as f64 / world as f64;
        println!("{}", serde_json_line(world, t, algbw, busbw, tcp));
    }
    group.finish();
}

/// Upper bound of busbw / single-stream bandwidth when all `world` ranks share `cores`
/// cores over loopback: every byte a rank sends is copied by the kernel on send and on
/// receive, like the single stream's, so the ring moves `4(N − 1)·S` byte-copies where the
/// single stream moves `2·S` on 2 cores; with `cores ≥ 2N` (a core per sender and receiver)
/// the bound is 1.
fn cpu_bound(world: usize, cores: usize) -> f64 {
    (cores as f64 / (2.0 * world as f64)).min(1.0)
}

fn serde_json_line(world: usize, t: f64, algbw: f64, busbw: f64, tcp: f64) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{{\"event\":\"allreduce_figures\",\"bytes\":{BYTES},\"world\":{world},\"time_s\":{t:.6},\"algbw_gb_s\":{:.3},\"busbw_gb_s\":{:.3},\"tcp_single_stream_gb_s\":{:.3},\"busbw_over_tcp\":{:.3},\"cores\":{cores},\"busbw_over_cpu_bound\":{:.3}}}",
        algbw / 1e9,
        busbw / 1e9,
        tcp / 1e9,
        busbw / tcp,
        busbw / (tcp * cpu_bound(world, cores))
    )
}

criterion_group!(benches, bench);
criterion_main!(benches);
