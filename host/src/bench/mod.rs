//! Benchmarks (`agora bench`).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not written yet")
}
