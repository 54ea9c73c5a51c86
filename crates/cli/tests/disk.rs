//! End-to-end: the real `tollway` binary on a disk that fills up. Each
//! test runs it in a user and mount namespace of its own (`unshare`, no
//! privilege needed) on a small tmpfs, which goes away with the namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic

mod common;

use std::process::Command;

/// `unshare` and its arguments: runs the rest of the command line as `sh -c
/// SCRIPT sh ARGS…` in namespaces of its own, root there and nowhere else.
fn in_own_mount_namespace(script: &str) -> Vec<&str> {
    // In a PID namespace too, whose processes all end with its first (the
    // shell), which ends with `unshare` (`--kill-child`): a test that
    // fails half-way leaves no chain running.
    vec!["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", script, "sh"]
}

/// `chain init` on a disk with room for the small files but not the store
/// said "store: I/O error: No space left on device (os error 28)", naming
/// no file, and left genesis.json, node.key, chain.toml and an empty
/// chain.redb behind: `chain run` then called the store corrupt ("no
/// tip"), and `chain init` refused the home as one that already held a
/// chain.
#[test]
fn chain_init_on_a_full_disk_names_the_store_and_leaves_no_half_chain() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let script = r#"
        mount -t tmpfs -o size=48k tmpfs "$2" || exit 97
        "$1" chain init --home "$2/chain" >/dev/null
        echo "first init: exit $?"
        ls -A "$2/chain" 2>/dev/null | sed 's/^/left behind: /'
        mount -o remount,size=8m "$2" || exit 97
        "$1" chain init --home "$2/chain" && "$1" chain replay --home "$2/chain"
    "#;
    let mut args = in_own_mount_namespace(script);
    args.extend([env!("CARGO_BIN_EXE_tollway"), disk.to_str().unwrap()]);
    let out = Command::new(args[0]).args(&args[1..]).env_remove("RUST_BACKTRACE").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(97), "could not mount a tmpfs in a namespace of its own: {stderr}");
    assert!(stdout.contains("first init: exit 1"), "{stdout}{stderr}");
    let store = disk.join("chain").join("chain.redb");
    assert!(stderr.contains(&format!("{}: ", store.display())) && stderr.contains("No space left on device"), "{stderr}");
    assert!(!stdout.contains("left behind"), "a half-written home: {stdout}");
    // With room again, the same command makes the chain.
    assert!(out.status.success() && stdout.contains("every state root matches"), "{stdout}{stderr}");
}
