//! `tollway keys`: ed25519 key files (DESIGN §6).
//!
//! A key file is JSON, `{"public": "<64 hex>", "secret": "<64 hex>"}`, the
//! secret being the 32-byte seed. Files are created with mode 0600 and never
//! overwritten without `--force`; an import reads the seed from stdin so it
//! never lands in shell history or `ps` output.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tollway_types::keys::{hex, parse_hex32};
use tollway_types::SigningKey;

/// The key file used when no `--key`/`--out` is given: `$TOLLWAY_KEY`, else
/// `./tollway.key`.
pub fn default_key_path() -> PathBuf {
    match std::env::var_os("TOLLWAY_KEY") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("tollway.key"),
    }
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a new random key and write it to a key file (mode 0600).
    New(WriteArgs),
    /// Print a key file's public key: the account id. Never the secret.
    Show {
        /// The key file [default: $TOLLWAY_KEY, else ./tollway.key].
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The key file, named without `--key` (as `keys new --out` wrote it).
        #[arg(value_name = "FILE", conflicts_with = "key")]
        file: Option<PathBuf>,
        /// Print {"path", "public"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a key file from a 64-hex-digit secret seed read from stdin
    /// (e.g. `tollway keys import --out a.key < seed.txt`).
    Import(WriteArgs),
}

/// Where and how `new` and `import` write a key file.
#[derive(clap::Args)]
pub struct WriteArgs {
    /// Where to write the key [default: $TOLLWAY_KEY, else ./tollway.key].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace an existing file (its old key is lost).
    #[arg(long)]
    force: bool,
    /// Print {"path", "public"} as JSON.
    #[arg(long)]
    json: bool,
}

impl WriteArgs {
    fn write(&self, key: &SigningKey, verb: &str) -> anyhow::Result<()> {
        let path = self.out.clone().unwrap_or_else(default_key_path);
        write_key_file(&path, key, self.force)?;
        print_key(&path, key, self.json, verb)?;
        Ok(())
    }
}

/// The on-disk form. `secret` is the seed; `public` is redundant and
/// checked on load, so a hand-edited or truncated file is caught.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    public: String,
    secret: String,
}

pub fn run(command: &KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New(w) => w.write(&SigningKey::generate(rand_core::OsRng), "created")?,
        KeysCommand::Show { key, file, json } => {
            let path = key.clone().or_else(|| file.clone()).unwrap_or_else(default_key_path);
            let key = load_key_file(&path)?;
            if *json {
                outln!("{}", serde_json::json!({ "path": path.display().to_string(), "public": key.public().to_hex() }))?;
            } else {
                outln!("{}", key.public().to_hex())?;
            }
        }
        KeysCommand::Import(w) => {
            let mut input = String::new();
            if std::io::stdin().is_terminal() {
                eprintln!("paste the 64-hex-digit secret seed, then press Enter and Ctrl-D:");
            }
            std::io::stdin().read_to_string(&mut input).context("reading the secret seed from stdin")?;
            w.write(&parse_secret(&input)?, "imported")?;
        }
    }
    Ok(())
}

fn print_key(path: &Path, key: &SigningKey, json: bool, verb: &str) -> std::io::Result<()> {
    if json {
        outln!("{}", serde_json::json!({ "path": path.display().to_string(), "public": key.public().to_hex() }))?;
    } else {
        outln!("{verb} key file {} (mode 0600)", path.display())?;
        outln!("account {}", key.public().to_hex())?;
    }
    Ok(())
}

/// A secret seed as typed or piped: 64 hex digits, surrounding whitespace
/// ignored. The input is never echoed back: it may be (almost) a secret.
fn parse_secret(input: &str) -> anyhow::Result<SigningKey> {
    let text = input.trim();
    if text.is_empty() {
        bail!("no secret seed on stdin: pipe in 64 hex digits, e.g. `tollway keys import --out a.key < seed.txt`");
    }
    match parse_hex32(text) {
        Some(seed) => Ok(SigningKey::from_seed(seed)),
        None => bail!(
            "stdin does not hold a secret seed: expected 64 hex digits, got {} characters{}",
            text.chars().count(),
            if text.chars().all(|c| c.is_ascii_hexdigit()) { "" } else { " including non-hex ones" }
        ),
    }
}

/// Writes `key` to `path` with mode 0600. Without `force` an existing file
/// is an error and is left untouched; with `force` the new file is written
/// beside it and renamed over it, so a failed write never loses the old key.
pub fn write_key_file(path: &Path, key: &SigningKey, force: bool) -> anyhow::Result<()> {
    let body = serde_json::to_string_pretty(&KeyFile { public: key.public().to_hex(), secret: hex(&key.seed_bytes()) })
        .context("encoding the key file")?
        + "\n";
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    }
    if !force {
        if path.exists() {
            bail!("{} already exists; not overwriting a key (use --force to replace it, losing the old key)", path.display());
        }
        return write_new(path, body.as_bytes());
    }
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    // A stale temporary from a crashed run holds no key anyone relies on.
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, body.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("replacing {}", path.display())
    })
}

/// Creates `path` (which must not exist) with mode 0600, writes and syncs
/// it; removes it again if anything fails, so no half-written key remains.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| match path.exists() {
            true => format!("{} already exists; not overwriting a key (use --force to replace it)", path.display()),
            false => format!("creating key file {}", path.display()),
        })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("writing key file {}", path.display()));
    }
    Ok(())
}

/// Reads a key file. Warns on stderr if group or others may read it (the
/// key still loads: refusing would strand funds over a chmod).
pub fn load_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| match path.exists() {
        true => format!("reading key file {}", path.display()),
        false => format!("key file {} does not exist (create one with `tollway keys new --out {}`, or pass --key FILE or set TOLLWAY_KEY)", path.display(), path.display()),
    })?;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: key file {} is readable by others (mode {mode:04o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| {
        // Only where, not serde's message: that quotes the content (a bare
        // string or number there is the secret itself).
        anyhow::anyhow!(
            "{} is not a key file ({:?} at line {} column {}); expected {{\"public\": \"<64 hex>\", \"secret\": \"<64 hex>\"}}",
            path.display(),
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    let seed = parse_hex32(&file.secret)
        .with_context(|| format!("key file {}: \"secret\" is not 64 hex digits", path.display()))?;
    let key = SigningKey::from_seed(seed);
    if parse_hex32(&file.public) != Some(key.public().0) {
        bail!(
            "key file {}: \"public\" does not match the secret (the secret's public key is {})",
            path.display(),
            key.public().to_hex()
        );
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::err_of;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tollway-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    #[test]
    fn written_key_is_0600_loads_back_and_is_not_overwritten() {
        let dir = temp_dir("write");
        let path = dir.join("a.key");
        let key = SigningKey::from_label("a");
        write_key_file(&path, &key, false).unwrap_or_else(|e| panic!("{e:#}"));
        let mode = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{e}")).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_key_file(&path).unwrap_or_else(|e| panic!("{e:#}")).public(), key.public());

        let other = SigningKey::from_label("b");
        let err = err_of(write_key_file(&path, &other, false));
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        assert_eq!(load_key_file(&path).unwrap_or_else(|e| panic!("{e:#}")).public(), key.public());

        // --force replaces it, and a loose mode on the old file is not inherited.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
        write_key_file(&path, &other, true).unwrap_or_else(|e| panic!("{e:#}"));
        let mode = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{e}")).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_key_file(&path).unwrap_or_else(|e| panic!("{e:#}")).public(), other.public());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_parse_strictly_and_are_never_echoed() {
        let key = SigningKey::from_label("seed");
        let seed_hex = hex(&key.seed_bytes());
        let parsed = parse_secret(&format!("  {seed_hex}\n")).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(parsed.public(), key.public());
        for bad in ["", "\n", "zz", &seed_hex[..62], &format!("{seed_hex}00"), &format!("g{}", &seed_hex[1..])] {
            let err = err_of(parse_secret(bad));
            assert!(err.contains("64 hex digits"), "{bad:?}: {err}");
            if bad.len() > 8 {
                assert!(!err.contains(&bad[..8]), "the input was echoed: {err}");
            }
        }
    }

    #[test]
    fn tampered_key_files_are_refused() {
        let dir = temp_dir("tamper");
        let path = dir.join("k.key");
        let a = SigningKey::from_label("a");
        let b = SigningKey::from_label("b");
        let mismatched = format!("{{\"public\": \"{}\", \"secret\": \"{}\"}}", b.public().to_hex(), hex(&a.seed_bytes()));
        std::fs::write(&path, mismatched).unwrap_or_else(|e| panic!("{e}"));
        let err = err_of(load_key_file(&path));
        assert!(err.contains("does not match the secret"), "{err}");
        std::fs::write(&path, "not json").unwrap_or_else(|e| panic!("{e}"));
        let err = err_of(load_key_file(&path));
        assert!(err.contains("is not a key file"), "{err}");
        // A bare seed, as a string or a number, is never quoted back: the
        // parser's own message did ("invalid type: string \"<seed>\"").
        let seed = hex(&a.seed_bytes());
        for text in [format!("\"{seed}\""), seed.clone(), format!("[\"{seed}\"]")] {
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            let err = err_of(load_key_file(&path));
            assert!(err.contains("is not a key file") && !err.contains(&seed[..8]), "{err}");
        }
        let err = err_of(load_key_file(&dir.join("missing.key")));
        assert!(err.contains("does not exist"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
