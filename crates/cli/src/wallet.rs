//! `tollway wallet` (placeholder while it is being written).
#[derive(clap::Args)]
pub struct WalletArgs {}
pub fn run(_a: &WalletArgs) -> anyhow::Result<()> {
    anyhow::bail!("wallet: being written")
}
