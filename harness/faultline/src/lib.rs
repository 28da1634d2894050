//! faultline's harness: runs scenarios against a stack of real processes, injects faults
//! on a timeline, analyses the load generator's measurements and writes reports.
//!
//! Module map: [`cli`] (commands), [`runner`] (one scenario end to end), [`supervisor`]
//! (processes, readiness, restarts), [`faults`] (self-healing fault guards and the pure
//! timeline), [`analysis`] (phases, recovery, window figures), [`slo`] (verdicts),
//! [`events`] (run clock and `events.jsonl`), [`requests`] (request bodies),
//! [`binaries`] (finding stack binaries), [`training`] (trainer events → training figures).

pub mod addrs;
pub mod analysis;
pub mod assemble;
pub mod binaries;
pub mod cli;
pub mod events;
pub mod faults;
mod pdeathsig;
pub mod requests;
pub mod runner;
pub mod slo;
pub mod stack;
pub mod supervisor;
pub mod timeline;
pub mod training;
pub mod wait;
