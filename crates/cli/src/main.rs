//! `tollway`: the command line (DESIGN §6). Thin: it parses flags, reads
//! files and prints; the work is in the library crates.

/// `println!` that returns the write's error instead of panicking, so
/// `tollway demo | head` ends quietly when `head` closes the pipe
/// (`main` turns a broken pipe into exit status 141, as SIGPIPE would).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod api_client;
mod chain;
mod dataplane;
mod demo;
mod keys;
mod node_config;
mod sim;
mod wallet;

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
    /// paying through channels, a liar, an oracle colluding with it and a
    /// sybil farm.
    Demo(demo::DemoArgs),
    /// The tokenomics simulator: run scenarios over years of synthetic
    /// market activity through the ledger's own epoch economics.
    Sim {
        #[command(subcommand)]
        command: sim::SimCommand,
    },
    /// Run a chain node: `init` a home directory, `run` the sequencer and
    /// its HTTP API, `replay` every block to check the state roots.
    Chain {
        #[command(subcommand)]
        command: chain::ChainCommand,
    },
    /// Key files: create, show or import an ed25519 key (files are 0600).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// The wallet: balances, transfers, staking and payment channels,
    /// through a chain node's HTTP API.
    Wallet(wallet::WalletArgs),
    /// Run a node's tunnel server: `init` its TLS key, `run` it as an exit
    /// and relay on the ports its ledger record advertises.
    Node {
        #[command(subcommand)]
        command: dataplane::NodeCommand,
    },
    /// A local SOCKS5 / HTTP proxy whose connections go through
    /// paid, encrypted tunnels to the given exits, or ones picked from the
    /// market (optionally via a relay).
    Connect(dataplane::ConnectArgs),
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

/// Errors print as one line, `error: what failed: why`, and exit 1.
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if closed_stdout(&e) => std::process::ExitCode::from(141),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The reader of our output went away (a pipe into `head`): not an error
/// worth a message.
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Sim { command } => sim::run(&command),
        Command::Chain { command } => chain::run(command),
        Command::Keys { command } => keys::run(&command),
        Command::Wallet(args) => wallet::run(&args),
        Command::Node { command } => dataplane::run_node(&command),
        Command::Connect(args) => dataplane::run_connect(&args),
        Command::Params { command: ParamsCommand::Show } => {
            outln!("{}", tollway_ledger::params::DEFAULT_PARAMS_TOML.trim_end())?;
            Ok(())
        }
        Command::Params { command: ParamsCommand::Check { file } } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let params = Params::from_toml(&text).with_context(|| format!("checking {}", file.display()))?;
            outln!(
                "{}: ok (epoch {} s, {} epochs a year, year-one emission {})",
                file.display(),
                params.epoch_secs,
                params.epochs_per_year(),
                params.emission_year_one
            )?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod test_util {
    /// The error's full message; panics if there was none.
    pub fn err_of<T>(result: anyhow::Result<T>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// No help text shows a USD amount in double quotes: a shell expands
    /// `"$25"` to the second positional argument (usually empty) and `5`,
    /// and bare numbers are USD, so the command went through with $5.
    #[test]
    fn no_help_shows_a_dollar_amount_a_shell_would_expand() {
        fn walk(cmd: &mut clap::Command, path: &str, found: &mut Vec<String>) {
            let help = cmd.render_long_help().to_string();
            for line in help.lines().filter(|l| l.contains("\"$")) {
                found.push(format!("{path}: {}", line.trim()));
            }
            for sub in cmd.get_subcommands_mut() {
                let name = format!("{path} {}", sub.get_name());
                walk(sub, &name, found);
            }
        }
        let mut found = Vec::new();
        walk(&mut super::Cli::command(), "tollway", &mut found);
        assert!(found.is_empty(), "{found:#?}");
    }
}
