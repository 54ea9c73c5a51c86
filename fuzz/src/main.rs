//! `tollway-fuzz seeds DIR [TARGET]`: writes TARGET's seed corpus (one
//! file per seed) that `run.sh` hands to libFuzzer; TARGET defaults to
//! `tx_decode`.
//! `tollway-fuzz check [--target TARGET] FILE...`: runs a target's
//! property on saved inputs (e.g. a crash artifact) in a plain stable
//! build, for a readable backtrace and a debugger without cargo-fuzz.
//! Without `--target`, the target is the one named by a directory in the
//! file's path (`fuzz/artifacts/socks_parse/crash-…`), else `tx_decode`.

use anyhow::{bail, Context, Result};
use std::path::Path;
use tollway_fuzz::{FuzzTarget, TARGETS};

const DEFAULT_TARGET: &str = "tx_decode";
const USAGE: &str =
    "usage: tollway-fuzz seeds DIR [TARGET] | tollway-fuzz check [--target TARGET] FILE...";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["seeds", dir] => write_seeds(Path::new(dir), target(DEFAULT_TARGET)?),
        ["seeds", dir, name] => write_seeds(Path::new(dir), target(name)?),
        ["check", "--target", name, files @ ..] if !files.is_empty() => {
            check(files, Some(target(name)?))
        }
        ["check", files @ ..] if !files.is_empty() => check(files, None),
        _ => bail!("{USAGE}"),
    }
}

fn target(name: &str) -> Result<&'static FuzzTarget> {
    match tollway_fuzz::target(name) {
        Some(target) => Ok(target),
        None => {
            let known: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            bail!("unknown fuzz target '{name}' (known: {})", known.join(", "))
        }
    }
}

/// The target a saved input belongs to, from its path: run.sh keeps
/// artifacts in `artifacts/TARGET/`, the corpus in `corpus-out/TARGET/`
/// and seeds in `corpus-out/seeds-TARGET/`.
fn target_of(file: &Path) -> &'static FuzzTarget {
    file.ancestors()
        .filter_map(|dir| dir.file_name()?.to_str())
        .find_map(|dir| tollway_fuzz::target(dir.strip_prefix("seeds-").unwrap_or(dir)))
        .or_else(|| tollway_fuzz::target(DEFAULT_TARGET))
        .unwrap_or(&TARGETS[0])
}

fn check(files: &[&str], target: Option<&'static FuzzTarget>) -> Result<()> {
    for file in files {
        let data = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        let target = target.unwrap_or_else(|| target_of(Path::new(file)));
        (target.check)(&data);
        println!("ok {file} ({} bytes, {})", data.len(), target.name);
    }
    Ok(())
}

fn write_seeds(dir: &Path, target: &FuzzTarget) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let seeds = (target.seeds)();
    for (name, bytes) in &seeds {
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote {} {} to {}",
        seeds.len(),
        target.seeds_are,
        dir.display()
    );
    Ok(())
}
