//! `miner2mqtt bench`: measures the daemon polling N simulated miners.

/// Arguments of `miner2mqtt bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// How many simulated ESP-Miner miners.
    #[arg(long, default_value_t = 20)]
    pub miners: u32,
}

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench is not implemented yet")
}
