//! `tollway chain` (placeholder while it is being written).
#[derive(clap::Subcommand)]
pub enum ChainCommand {
    Init,
}
pub fn run(_c: ChainCommand) -> anyhow::Result<()> {
    anyhow::bail!("chain: being written")
}
