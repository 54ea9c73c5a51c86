//! `tollway-fuzz seeds DIR`: writes the seed corpus (one file per seed tx)
//! that `run.sh` hands to libFuzzer.
//! `tollway-fuzz check FILE...`: runs the `tx_decode` property on saved
//! inputs (e.g. a crash artifact) in a plain stable build, for a readable
//! backtrace and a debugger without cargo-fuzz.

use anyhow::{bail, Context, Result};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, [dir])) if cmd == "seeds" => write_seeds(Path::new(dir)),
        Some((cmd, files)) if cmd == "check" && !files.is_empty() => {
            for file in files {
                let data = std::fs::read(file).with_context(|| format!("reading {file}"))?;
                tollway_fuzz::check_tx_decode(&data);
                println!("ok {file} ({} bytes)", data.len());
            }
            Ok(())
        }
        _ => bail!("usage: tollway-fuzz seeds DIR | tollway-fuzz check FILE..."),
    }
}

fn write_seeds(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let seeds = tollway_fuzz::seed_txs();
    for seed in &seeds {
        let path = dir.join(format!("seed-{}", seed.name));
        std::fs::write(&path, seed.tx.encode())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("wrote {} seed txs to {}", seeds.len(), dir.display());
    Ok(())
}
