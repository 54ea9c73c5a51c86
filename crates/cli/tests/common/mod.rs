//! What the end-to-end tests share: starting the real binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `tollway ARGS` and returns (success, stdout, stderr).
#[allow(dead_code)] // not every test file uses it
pub fn tollway(args: &[&str]) -> (bool, String, String) {
    tollway_in(Path::new("."), args)
}

/// As [`tollway`], with `dir` as the working directory.
#[allow(dead_code)]
pub fn tollway_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("cannot start tollway: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A long-running `tollway` child, killed (SIGKILL) when dropped, even when
/// a test assertion panics half-way. `start` waits for a stdout line that
/// contains `ready` and keeps draining stdout so the child never blocks.
#[allow(dead_code)] // not every test file starts one
pub struct Daemon {
    pub child: Child,
    /// The stdout lines read so far: up to and including the ready line,
    /// then whatever [`Daemon::wait_for_line`] read.
    pub lines: Vec<String>,
    /// The later lines, as the child prints them.
    rest: mpsc::Receiver<String>,
}

#[allow(dead_code)]
impl Daemon {
    pub fn start(dir: &Path, args: &[&str], ready: &str) -> Daemon {
        Daemon::start_under(&[], dir, args, ready)
    }

    /// As [`Daemon::start`], run by `wrapper` (a command that runs the
    /// rest of its arguments, e.g. `prlimit --nofile=…`).
    pub fn start_under(wrapper: &[&str], dir: &Path, args: &[&str], ready: &str) -> Daemon {
        let tollway = env!("CARGO_BIN_EXE_tollway");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(tollway);
                c
            }
            None => Command::new(tollway),
        };
        let mut child = command
            .args(args)
            .current_dir(dir)
            .env_remove("RUST_BACKTRACE")
            .env_remove("TOLLWAY_KEY")
            .env_remove("TOLLWAY_API")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tollway {args:?}: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout pipe"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon { child, lines: Vec::new(), rest: rx };
        if daemon.wait_for_line(ready, Duration::from_secs(30)).is_none() {
            let status = daemon.child.try_wait().ok().flatten();
            panic!("tollway {args:?} printed no {ready:?} line within 30 s (exit: {status:?}); it printed {:?}", daemon.lines);
        }
        daemon
    }

    /// Reads stdout lines until one contains `text` (returned) or `within`
    /// has passed (`None`).
    pub fn wait_for_line(&mut self, text: &str, within: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let line = self.rest.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).ok()?;
            self.lines.push(line.clone());
            if line.contains(text) {
                return Some(line);
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `tollway chain run` child, killed when dropped.
#[allow(dead_code)] // not every test file starts a chain
pub struct ChainProcess {
    pub daemon: Daemon,
    /// `http://127.0.0.1:PORT`
    pub api: String,
}

#[allow(dead_code)]
impl ChainProcess {
    /// Starts the chain on a free loopback port and waits for its
    /// `listening on http://…` line.
    pub fn start(dir: &Path, home: &Path) -> ChainProcess {
        let home = home.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
        let args = ["chain", "run", "--home", home, "--listen", "127.0.0.1:0", "--block-interval", "100ms"];
        let daemon = Daemon::start(dir, &args, "listening on ");
        let api = daemon.lines.iter().rev().find_map(|l| l.split("listening on ").nth(1)).unwrap_or("").trim().to_string();
        ChainProcess { daemon, api }
    }
}
