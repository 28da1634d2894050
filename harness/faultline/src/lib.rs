//! faultline's harness: runs scenarios against a stack of real processes, injects faults
//! on a timeline, analyses the load generator's measurements and writes reports.
//!
//! Module map (docs/ARCHITECTURE.md has the details): [`cli`] (commands), [`runner`] (one
//! scenario end to end), [`clients`] (a load as several clients in several regions), [`abort`] (k6-style early stop), [`stack`] (replica specs from the scenario and the kind table),
//! [`addrs`] (a loopback address per replica), [`netns`] (regions as network namespaces), [`supervisor`] (processes, readiness,
//! restarts), [`faults`] (injectors and healing guards), [`timeline`] (plays the faults),
//! [`assemble`] (pure report assembly), [`drain`] (isolating search trials), [`analysis`] (phases, recovery, window figures),
//! [`slo`] (verdicts), [`events`] (run clock and `events.jsonl`), [`requests`] (request
//! bodies), [`repeat`] (`--runs N` series), [`sampler`] (CPU, memory, host load), [`binaries`] (finding stack binaries), [`training`] (trainer events → training
//! figures), [`wait`] (polling with a patience).

pub mod abort;
pub mod addrs;
pub mod analysis;
pub mod assemble;
pub mod binaries;
pub mod cli;
pub mod clients;
pub mod compare_cmd;
pub mod drain;
pub mod events;
pub mod faults;
pub mod netns;
mod pdeathsig;
pub mod repeat;
pub mod requests;
pub mod runner;
pub mod sampler;
pub mod slo;
pub mod stack;
pub mod supervisor;
pub mod timeline;
pub mod training;
pub mod wait;
