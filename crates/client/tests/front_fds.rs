//! The front end when the process is out of file descriptors: a local
//! program holding many connections open (a desktop's soft limit is
//! often 1,024, below `max_clients`' 4,096). A test binary of its own, as
//! it lowers this process's limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Seek};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tollway_client::connect::ConnectOptions;
use tollway_client::{serve_front, ClientConfig, FrontConfig, RoutePool};
use tollway_net::{ClientOptions, Transport};
use tollway_tunnel::session::Limits;
use tollway_types::keys::SigningKey;

/// This process's user and system CPU time in clock ticks (1/100 s), from
/// a file opened before the descriptors ran out.
fn cpu_ticks(stat: &mut std::fs::File) -> u64 {
    let mut text = String::new();
    stat.seek(std::io::SeekFrom::Start(0)).unwrap();
    stat.read_to_string(&mut text).unwrap();
    let fields: Vec<&str> = text[text.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime: fields 14 and 15 of the line, the state being 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// A failed accept (EMFILE) leaves the connection queued and the listener
/// readable: the loop retried at once, forever, and spun a core (141 of
/// 200 ticks in two idle seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_end_does_not_spin_when_out_of_file_descriptors() {
    let connect = ConnectOptions {
        chain_id: "fds".into(),
        key: SigningKey::from_label("fds"),
        transport: Transport::Tls,
        net: ClientOptions::default(),
        limits: Limits::default(),
        hop_window: None,
    };
    // No routes: every connection here sends nothing, so none needs one.
    let pool = RoutePool::start(ClientConfig::new(connect, Vec::new()));
    let listener = TcpListener::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_front(listener, pool, FrontConfig::default()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stat = std::fs::File::open("/proc/self/stat").unwrap();
    // Room for about twenty more descriptors.
    let limit = open_fds() + 41;
    let lowered = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={limit}:{limit}")])
        .status()
        .unwrap();
    assert!(lowered.success());
    // Each connection costs this process two: its end and the accepted one.
    let mut held = Vec::new();
    for _ in 0..100 {
        match TcpStream::connect(addr).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_ticks(&mut stat);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(&mut stat) - before;
    eprintln!("{} connections held at a limit of {limit} descriptors: {used} ticks of CPU in 2 s", held.len());
    assert!(held.len() >= 15, "only {} connections", held.len());
    assert!(used < 40, "{used} of 200 ticks in two idle seconds: the accept loop spins");
}
