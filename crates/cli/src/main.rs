//! `tollway`: the command line (DESIGN §6). Thin: it parses flags, reads
//! files and prints; the work is in the library crates.

mod demo;
mod sim;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tollway_ledger::Params;

#[derive(Parser)]
#[command(name = "tollway", version, about = "Tollway: a decentralized bandwidth marketplace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scripted economy through the real ledger and print it epoch by
    /// epoch: nodes in eight regions, oracles measuring them, consumers
    /// paying through channels, a liar and a sybil farm.
    Demo(demo::DemoArgs),
    /// The tokenomics simulator: run scenarios over years of synthetic
    /// market activity through the ledger's own epoch economics.
    Sim {
        #[command(subcommand)]
        command: sim::SimCommand,
    },
    /// Economic parameters: print or check a parameters file.
    Params {
        #[command(subcommand)]
        command: ParamsCommand,
    },
}

#[derive(Subcommand)]
enum ParamsCommand {
    /// Print the default parameters (params/default.toml, as compiled in).
    Show,
    /// Check a parameters file; prints the first problem found.
    Check { file: PathBuf },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Sim { command } => sim::run(&command),
        Command::Params { command: ParamsCommand::Show } => {
            print!("{}", tollway_ledger::params::DEFAULT_PARAMS_TOML);
            Ok(())
        }
        Command::Params { command: ParamsCommand::Check { file } } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let params = Params::from_toml(&text).with_context(|| format!("checking {}", file.display()))?;
            println!(
                "{}: ok (epoch {} s, {} epochs a year, year-one emission {})",
                file.display(),
                params.epoch_secs,
                params.epochs_per_year(),
                params.emission_year_one
            );
            Ok(())
        }
    }
}
