//! `server`: the faultline reference inference server. See the `server` library for the
//! HTTP surface; this only parses flags.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    server::run(server::Args::parse())
}
