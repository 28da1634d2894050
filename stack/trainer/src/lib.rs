//! trainer (docs to come)
pub mod checkpoint;
pub mod comm;
pub mod device;
pub mod events;
pub mod failpoint;
pub mod optim;
pub mod train;
pub mod ring;
pub mod workload;
