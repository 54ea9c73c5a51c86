//! What the end-to-end tests share: starting the real binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `tollway ARGS` and returns (success, stdout, stderr).
#[allow(dead_code)] // not every test file uses it
pub fn tollway(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("cannot start tollway: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A `tollway chain run` child, killed when dropped (even when a test
/// assertion panics half-way).
#[allow(dead_code)] // not every test file starts a chain
pub struct ChainProcess {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub api: String,
}

impl Drop for ChainProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(dead_code)]
impl ChainProcess {
    /// Starts the chain on a free loopback port and waits for its
    /// `listening on http://…` line.
    pub fn start(dir: &Path, home: &Path) -> ChainProcess {
        let home = home.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollway"))
            .args(["chain", "run", "--home", home, "--listen", "127.0.0.1:0", "--block-interval", "100ms"])
            .current_dir(dir)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tollway chain run: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout pipe"));
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout so the chain never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let mut chain = ChainProcess { child, api: String::new() };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => chain.api = url,
            Err(_) => {
                let status = chain.child.try_wait().ok().flatten();
                panic!("tollway chain run printed no `listening on` line within 30 s (exit: {status:?})");
            }
        }
        chain
    }
}
