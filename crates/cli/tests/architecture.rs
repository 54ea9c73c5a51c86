//! Architecture invariants (ARCHITECTURE.md), enforced as ordinary tests:
//! the pure core crates know nothing of async runtimes, clocks, randomness
//! sources, sockets or files.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let p = entry.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn pure_core_crates_do_no_io_and_read_no_clock() {
    const PURE: [&str; 4] = ["crates/types", "crates/ledger", "crates/tunnel", "crates/socks"];
    // Sans-IO crates that take time as a value from their driver
    // (quinn-proto style): they may name `std::time::{Instant, Duration}`,
    // but never read a clock; the other pure crates do not touch std::time.
    const TIME_AS_VALUE: [&str; 1] = ["crates/tunnel"];
    // rand_core is allowed: it is only the RNG trait, the caller brings
    // the generator (key generation in the CLI).
    const FORBIDDEN_DEPS: [&str; 7] = ["tokio", "rand", "rand_chacha", "getrandom", "chrono", "redb", "quinn"];
    // Reading a clock (`elapsed` reads one too), sockets, files, the
    // environment and randomness sources; and threads: a caller lends its
    // own (`tollway_ledger::workers::Workers`), so the core's results never
    // depend on how it was scheduled.
    const FORBIDDEN_CODE: [&str; 16] = [
        "SystemTime",
        "UNIX_EPOCH",
        "Instant::now",
        ".elapsed()",
        "std::fs",
        "std::net::Tcp",
        "std::net::Udp",
        "TcpStream",
        "TcpListener",
        "UdpSocket",
        "thread_rng",
        "OsRng",
        "std::env",
        "tokio::",
        "std::thread",
        "thread::spawn",
    ];
    for krate in PURE {
        let manifest = std::fs::read_to_string(repo().join(krate).join("Cargo.toml")).unwrap_or_default();
        let deps = manifest.split("[dependencies]").nth(1).unwrap_or_default();
        let deps = deps.split("[dev-dependencies]").next().unwrap_or_default();
        let names: Vec<&str> =
            deps.lines().filter_map(|l| l.split(['=', '.']).next()).map(str::trim).filter(|n| !n.is_empty()).collect();
        // Every pure crate has its error types from thiserror: finding it
        // shows the dependency list was read.
        assert!(names.contains(&"thiserror"), "{krate}: could not read its dependencies ({names:?})");
        for dep in FORBIDDEN_DEPS {
            assert!(!names.contains(&dep), "{krate} depends on {dep}");
        }
        let mut files = Vec::new();
        sources(&repo().join(krate).join("src"), &mut files);
        assert!(!files.is_empty());
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for bad in FORBIDDEN_CODE {
                assert!(!text.contains(bad), "{} uses {bad}: the core must stay pure", f.display());
            }
            if !TIME_AS_VALUE.contains(&krate) {
                assert!(!text.contains("std::time"), "{} uses std::time: the core must stay pure", f.display());
            }
        }
    }
}

#[test]
fn ledger_state_holds_no_floats() {
    let state = std::fs::read_to_string(repo().join("crates/ledger/src/state.rs")).unwrap_or_default();
    assert!(!state.contains("f64") && !state.contains("f32"), "floats in ledger state");
}
