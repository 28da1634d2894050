//! Benchmarks live in benches/benches/*.rs; see docs/BENCHMARKS.md.
