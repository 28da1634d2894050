//! Process exit codes of `trainer worker` (and `trainer launch`, which exits with the first
//! non-zero worker code). Stable: the harness maps them to fault classes.

/// Training finished; final weights published (rank 0).
pub const DONE: i32 = 0;
/// Configuration, I/O or model error (the `exit` event and stderr say which), or a child of
/// `trainer launch` whose launcher has already exited.
pub const ERROR: i32 = 1;
/// Bad command line (clap's usage errors).
pub const USAGE: i32 = 2;
/// `gpu.lost`: the device failed every operation (simulated Xid 79). Replace the device.
pub const GPU_LOST: i32 = 3;
/// `gpu.oom` without back-off: a step does not fit the device memory limit.
pub const GPU_OOM: i32 = 4;
/// The rendezvous is gone, evicted this worker (e.g. after a heartbeat timeout while it was
/// stopped) or shut the job down for lack of workers.
pub const RENDEZVOUS: i32 = 5;
/// `trainer launch` was interrupted (SIGINT/SIGTERM) and stopped its workers.
pub const INTERRUPTED: i32 = 130;
