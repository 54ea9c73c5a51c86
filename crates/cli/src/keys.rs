//! `tollway keys` (placeholder while it is being written).
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    New,
}
pub fn run(_c: &KeysCommand) -> anyhow::Result<()> {
    anyhow::bail!("keys: being written")
}
