//! NCCL communicator (cargo feature `cuda`): the [`Communicator`] trait over NVIDIA's
//! collectives on CUDA device memory, through cudarc with dynamic loading, so the crate
//! builds on a machine without a GPU, CUDA toolkit or NCCL, and fails at run time with
//! [`CudaError::Unavailable`] naming the missing piece.
//!
//! The NCCL unique id is created by rank 0 and broadcast over a bootstrap communicator (the
//! TCP ring of the same membership epoch), as torch.distributed does through its store.
//! cudarc's `Comm` is not `Send`, so the communicator lives on its own thread (which owns the
//! CUDA context and stream) and collectives are requests to it; each one copies the host
//! buffer to the device, runs the collective on the stream and copies the result back.

use crate::comm::{CommError, Communicator};
use cudarc::driver::CudaContext;
use cudarc::nccl::safe::{Comm, Id, ReduceOp};
use std::sync::mpsc;

/// The CUDA/NCCL backend cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The driver or NCCL library is missing, or there is no such device.
    #[error("CUDA/NCCL unavailable: {0}; the `cuda` feature needs an NVIDIA driver (libcuda.so) and NCCL (libnccl.so.2) at run time — use the TCP ring (the default) on this machine")]
    Unavailable(String),
    /// Bootstrapping over the TCP ring failed.
    #[error("bootstrapping NCCL over the TCP ring: {0}")]
    Bootstrap(#[from] CommError),
}

/// Runs `f`, turning a panic (cudarc panics when a dynamically loaded library is missing)
/// into an error message.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| format!("{what}: {e}")),
        Err(p) => Err(format!(
            "{what}: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "library not found".into())
        )),
    }
}

enum Request {
    AllReduce(Vec<f32>),
    Broadcast(Vec<f32>, usize),
}

/// An NCCL communicator for one rank on CUDA device `ordinal`.
#[derive(Debug)]
pub struct NcclComm {
    rank: usize,
    world: usize,
    tx: Option<mpsc::Sender<Request>>,
    rx: mpsc::Receiver<Result<Vec<f32>, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NcclComm {
    /// Creates the communicator for `bootstrap`'s rank and world on device `ordinal`. Every
    /// rank must call it at the same time (it broadcasts the NCCL id over `bootstrap`).
    pub fn new(bootstrap: &mut dyn Communicator, ordinal: usize) -> Result<Self, CudaError> {
        let (rank, world) = (bootstrap.rank(), bootstrap.world());
        // [ok flag, 128 id bytes]
        let mut id_buf = vec![0.0f32; 129];
        let mut local_err = None;
        if rank == 0 {
            match guarded("creating the NCCL id", || {
                Id::new().map_err(|e| format!("{e:?}"))
            }) {
                Ok(id) => {
                    id_buf[0] = 1.0;
                    for (d, b) in id_buf[1..].iter_mut().zip(id.internal()) {
                        *d = f32::from(*b as u8);
                    }
                }
                Err(e) => local_err = Some(e),
            }
        }
        bootstrap.broadcast(&mut id_buf, 0)?;
        if let Some(e) = local_err {
            return Err(CudaError::Unavailable(e));
        }
        if id_buf[0] != 1.0 {
            return Err(CudaError::Unavailable(
                "rank 0 could not create an NCCL id".into(),
            ));
        }
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, v) in internal.iter_mut().zip(&id_buf[1..]) {
            *d = (*v as u8) as std::ffi::c_char;
        }
        let id = Id::uninit(internal);

        let (req_tx, req_rx) = mpsc::channel::<Request>();
        let (resp_tx, resp_rx) = mpsc::channel::<Result<Vec<f32>, String>>();
        let thread = std::thread::Builder::new()
            .name(format!("nccl-rank-{rank}"))
            .spawn(move || {
                let init = guarded("opening the CUDA device and NCCL communicator", || {
                    let ctx = CudaContext::new(ordinal)
                        .map_err(|e| format!("device {ordinal}: {e:?}"))?;
                    let stream = ctx.default_stream();
                    let comm = Comm::from_rank(stream.clone(), rank, world, id)
                        .map_err(|e| format!("ncclCommInitRank: {e:?}"))?;
                    Ok((stream, comm))
                });
                let (stream, comm) = match init {
                    Ok(x) => {
                        let _ = resp_tx.send(Ok(Vec::new()));
                        x
                    }
                    Err(e) => {
                        let _ = resp_tx.send(Err(e));
                        return;
                    }
                };
                for req in req_rx {
                    let r = (|| -> Result<Vec<f32>, String> {
                        let (data, root) = match req {
                            Request::AllReduce(d) => (d, None),
                            Request::Broadcast(d, root) => (d, Some(root)),
                        };
                        if data.is_empty() {
                            return Ok(data);
                        }
                        let mut dev = stream.clone_htod(&data).map_err(|e| format!("{e:?}"))?;
                        match root {
                            None => comm.all_reduce_in_place(&mut dev, &ReduceOp::Sum),
                            Some(root) => comm.broadcast_in_place(&mut dev, root as i32),
                        }
                        .map_err(|e| format!("{e:?}"))?;
                        stream.clone_dtoh(&dev).map_err(|e| format!("{e:?}"))
                    })();
                    if resp_tx.send(r).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| CudaError::Unavailable(format!("spawning the NCCL thread: {e}")))?;
        match resp_rx.recv() {
            Ok(Ok(_)) => Ok(Self {
                rank,
                world,
                tx: Some(req_tx),
                rx: resp_rx,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(CudaError::Unavailable(e)),
            Err(_) => Err(CudaError::Unavailable("the NCCL thread stopped".into())),
        }
    }

    fn call(&mut self, req: Request, data: &mut [f32]) -> Result<(), CommError> {
        let err = |message: String| CommError::Backend {
            backend: "nccl",
            message,
        };
        self.tx
            .as_ref()
            .ok_or_else(|| err("communicator closed".into()))?
            .send(req)
            .map_err(|_| err("the NCCL thread stopped".into()))?;
        let out = self
            .rx
            .recv()
            .map_err(|_| err("the NCCL thread stopped".into()))?
            .map_err(err)?;
        data.copy_from_slice(&out);
        Ok(())
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<(), CommError> {
        self.call(Request::AllReduce(data.to_vec()), data)
    }
    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<(), CommError> {
        if root >= self.world {
            return Err(CommError::BadRoot {
                root,
                world: self.world,
            });
        }
        self.call(Request::Broadcast(data.to_vec(), root), data)
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::loopback_ring;

    /// Two ranks on devices 0 and 1 (one rank per GPU, as NCCL requires).
    #[test]
    #[ignore = "needs 2 CUDA GPUs with NCCL: cargo test -p trainer --features cuda -- --ignored nccl"]
    fn nccl_all_reduce_sums_across_two_gpus() {
        let rings = loopback_ring(2, 1).expect("ring");
        std::thread::scope(|s| {
            for (r, mut ring) in rings.into_iter().enumerate() {
                s.spawn(move || {
                    let mut c = NcclComm::new(&mut ring, r).expect("nccl");
                    let mut v = vec![r as f32 + 1.0; 1000];
                    c.all_reduce_sum(&mut v).expect("all-reduce");
                    assert!(v.iter().all(|x| *x == 3.0));
                });
            }
        });
    }

    /// A world of one on device 0 (any single GPU).
    #[test]
    #[ignore = "needs a CUDA GPU with NCCL: cargo test -p trainer --features cuda -- --ignored nccl"]
    fn nccl_single_rank_all_reduce_and_broadcast_are_the_identity() {
        let mut ring = loopback_ring(1, 1).expect("ring").pop().expect("rank 0");
        let mut c = NcclComm::new(&mut ring, 0).expect("nccl");
        let mut v = vec![1.5f32; 4097];
        c.all_reduce_sum(&mut v).expect("all-reduce");
        c.broadcast(&mut v, 0).expect("broadcast");
        assert!(v.iter().all(|x| *x == 1.5));
    }

    #[test]
    fn without_a_gpu_the_error_says_what_is_missing_instead_of_panicking() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return; // a GPU machine: the ignored tests cover it
        }
        let mut ring = loopback_ring(1, 1).expect("ring").pop().expect("rank 0");
        let err = NcclComm::new(&mut ring, 0).expect_err("no GPU here");
        let msg = err.to_string();
        assert!(msg.contains("CUDA/NCCL unavailable"), "{msg}");
    }
}
