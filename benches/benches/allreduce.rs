//! All-reduce bandwidth against the link it runs on: one 64 MiB f32 buffer reduced by
//! N = 2 and 4 ranks (threads in this process) over each same-host transport the trainer
//! has — `tcp`, the ring over loopback TCP connections (`trainer::comm::TcpRing`), and
//! `shm`, the shared-memory segment (`trainer::shm_comm::ShmComm`, each rank with its own
//! mapping as worker processes have) — and the single-stream loopback TCP bandwidth
//! measured in the same run.
//!
//! Figures as nccl-tests defines them: `algbw = bytes / time`,
//! `busbw = algbw × 2(N − 1)/N`. Printed after each group as one `allreduce_figures` JSON
//! line; criterion's own throughput line is algbw.
//! Run: `cargo bench -p benches --bench allreduce` (or `benches/scripts/trainer-figures.sh`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use trainer::comm::{loopback_ring, Communicator};
use trainer::shm_comm::loopback_shm;

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

/// One core's memory copy rate: bytes per second copying `BYTES` between two touched
/// buffers, best of 5 (the physical limit the shared-memory transport works against).
fn memcpy_bandwidth() -> f64 {
    let src = vec![1u8; BYTES];
    let mut dst = vec![0u8; BYTES];
    (0..5)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            BYTES as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Wall time of `iters` all-reduces of `BYTES` on a ring of `world` ranks.
fn time_all_reduce<C: Communicator>(
    rings: &mut [C],
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
        println!(
            "{{\"event\":\"link_figures\",\"world\":{world},\"tcp_single_stream_gb_s\":{:.3},\"memcpy_one_core_gb_s\":{:.3}}}",
            tcp / 1e9,
            memcpy_bandwidth() / 1e9
        );
        let mut rings = loopback_ring(world, 1).expect("ring");
        let t = measure(&mut group, &format!("tcp/N={world}"), &mut rings, world);
        println!("{}", serde_json_line("tcp", world, t, tcp));
        drop(rings);
        let mut shm = loopback_shm(world, 2).expect("shared-memory segment");
        let t = measure(&mut group, &format!("shm/N={world}"), &mut shm, world);
        println!("{}", serde_json_line("shm", world, t, tcp));
    }
    group.finish();
}

/// Median seconds per all-reduce of `BYTES` over `comms`.
fn measure<C: Communicator + Send>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    comms: &mut [C],
    world: usize,
) -> f64 {
    let mut bufs: Vec<Vec<f32>> = (0..world)
        .map(|r| vec![r as f32 * 1e-3; BYTES / 4])
        .collect();
    let mut samples = Vec::new();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let d = time_all_reduce(comms, &mut bufs, iters);
            samples.push(d.as_secs_f64() / iters as f64);
            d
        })
    });
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Upper bound of busbw / single-stream bandwidth when all `world` ranks share `cores`
/// cores over loopback: every byte a rank sends is copied by the kernel on send and on
/// receive, like the single stream's, so the ring moves `4(N − 1)·S` byte-copies where the
/// single stream moves `2·S` on 2 cores; with `cores ≥ 2N` (a core per sender and receiver)
/// the bound is 1.
fn cpu_bound(world: usize, cores: usize) -> f64 {
    (cores as f64 / (2.0 * world as f64)).min(1.0)
}

fn serde_json_line(transport: &str, world: usize, t: f64, tcp: f64) -> String {
    let algbw = BYTES as f64 / t;
    let busbw = algbw * 2.0 * (world - 1) as f64 / world as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{{\"event\":\"allreduce_figures\",\"transport\":\"{transport}\",\"bytes\":{BYTES},\"world\":{world},\"time_s\":{t:.6},\"algbw_gb_s\":{:.3},\"busbw_gb_s\":{:.3},\"tcp_single_stream_gb_s\":{:.3},\"busbw_over_tcp\":{:.3},\"cores\":{cores},\"tcp_ring_cpu_bound\":{:.3}}}",
        algbw / 1e9,
        busbw / 1e9,
        tcp / 1e9,
        busbw / tcp,
        cpu_bound(world, cores)
    )
}

criterion_group!(benches, bench);
criterion_main!(benches);
