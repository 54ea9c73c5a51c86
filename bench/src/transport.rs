//! `transport`: bulk throughput of one connection over loopback, for the
//! choice of the default transport (ADR 0007).
//!
//! Each round sends 1 GiB (64 MiB with `--quick`) one way over a fresh
//! connection of each kind, in rotating order: plain TCP (the anchor, the
//! raw limit of the loopback), our TLS 1.3 over TCP, and our QUIC. The
//! handshake is not timed: the clock runs from the first byte written to
//! the receiver's end-of-stream. CPU time is the whole process's user +
//! system time over the same span (`/proc/self/stat`, 10 ms ticks), so it
//! counts both ends.
//!
//! Sender and receiver are tasks on a two-thread tokio runtime, as in the
//! daemons (the figures are for one connection on two cores, not one).
//! Ours is the default transport, [`tollway_net::Transport::default`].

use crate::{median, median_f64, report_line, sig3, Figure, Progress};
use anyhow::{ensure, Context};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tollway_net::{connect, ClientOptions, Listener, ServerOptions, TlsIdentity, Transport};

const GIB: u64 = 1 << 30;
const CHUNK_BYTES: usize = 256 * 1024;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    PlainTcp,
    Ours(Transport),
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::PlainTcp => "plain TCP (anchor: the loopback's raw limit)",
            Path::Ours(Transport::Tls) => "ours: TLS 1.3 over TCP (tokio-rustls, ring)",
            Path::Ours(Transport::Quic) => "ours: QUIC, one stream (quinn, ring)",
        }
    }
}

const PATHS: [Path; 3] = [Path::PlainTcp, Path::Ours(Transport::Tls), Path::Ours(Transport::Quic)];

#[derive(Clone, Copy)]
struct Sample {
    took: Duration,
    cpu_secs: f64,
}

pub fn run(progress: &Progress, quick: bool) -> anyhow::Result<String> {
    let bytes = if quick { 64 << 20 } else { GIB };
    let rounds = if quick { 3 } else { 5 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run_async(progress, bytes, rounds))
}

async fn run_async(progress: &Progress, bytes: u64, rounds: usize) -> anyhow::Result<String> {
    let identity = TlsIdentity::from_seed([0x5a; 32])?;
    let listener = Listener::bind(&Transport::ALL, LOOPBACK, 0..=0, &identity, &ServerOptions::default()).await?;
    let tcp = tokio::net::TcpListener::bind((LOOPBACK, 0)).await?;
    let tcp_addr = tcp.local_addr()?;
    let addr_of = |t: Transport| SocketAddr::new(LOOPBACK, listener.ports(t)[0]);
    let opts = ClientOptions::default();

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); PATHS.len()];
    let mut cipher_suite = None;
    progress.say(&format!("measuring: 1 warm-up + {rounds} rounds of {} MiB per path", bytes >> 20));
    for round in 0..=rounds {
        // Rotate the order, so that drift in the machine's speed hits every
        // path alike; the warm-up round is short and not counted.
        let round_bytes = if round == 0 { bytes.min(64 << 20) } else { bytes };
        for i in 0..PATHS.len() {
            let which = (i + round) % PATHS.len();
            let sample = match PATHS[which] {
                Path::PlainTcp => {
                    let (client, server) = tokio::join!(tokio::net::TcpStream::connect(tcp_addr), tcp.accept());
                    let (client, server) = (client?, server?.0);
                    client.set_nodelay(true)?;
                    server.set_nodelay(true)?;
                    transfer(client, server, round_bytes).await?
                }
                Path::Ours(transport) => {
                    let client = connect(transport, addr_of(transport), identity.pin(), &opts).await?;
                    let server = listener.accept().await?;
                    ensure!(server.channel_binding() == client.channel_binding(), "channel bindings differ");
                    if transport == Transport::Tls {
                        cipher_suite = client.cipher_suite();
                    }
                    transfer(client, server, round_bytes).await?
                }
            };
            if round > 0 {
                samples[which].push(sample);
            }
        }
        if round > 0 {
            let tls = &samples[1];
            let last = tls.last().map(|s| gb_per_s(bytes, s.took)).unwrap_or(0.0);
            progress.say(&format!("round {round}/{rounds}: TLS {} GB/s", sig3(last)));
        }
    }

    print_table(bytes, rounds, &samples, cipher_suite.as_deref());
    let default = Transport::default();
    let ours_index = PATHS.iter().position(|p| *p == Path::Ours(default)).context("default path")?;
    let ours = gb_per_s(bytes, median_took(&samples[ours_index]));
    let anchor = gb_per_s(bytes, median_took(&samples[0]));
    Ok(report_line(
        "transport",
        Figure { value: ours, unit: "GB/s" },
        Figure { value: anchor, unit: "GB/s" },
        "plain TCP on loopback, same run",
        ours / anchor,
    ))
}

/// Sends `bytes` from `client` to `server`, returning the time from the
/// first byte written to the receiver's end-of-stream and the process CPU
/// time spent meanwhile.
async fn transfer<C, S>(mut client: C, mut server: S, bytes: u64) -> anyhow::Result<Sample>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let chunk: Vec<u8> = (0..CHUNK_BYTES).map(|i| (i * 7 + 3) as u8).collect();
    let cpu_before = cpu_secs();
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK_BYTES as u64) as usize;
            client.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        client.shutdown().await?;
        Ok::<_, std::io::Error>(client)
    });
    let receiver = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut got = 0u64;
        loop {
            let n = server.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        Ok::<_, std::io::Error>((got, server))
    });
    let (got, server) = receiver.await??;
    let took = start.elapsed();
    let cpu_secs = cpu_secs() - cpu_before;
    let client = sender.await??;
    ensure!(got == bytes, "received {got} bytes of {bytes}");
    drop((client, server));
    Ok(Sample { took, cpu_secs })
}

/// User + system CPU seconds of this process so far (Linux `/proc`, in
/// clock ticks of 1/100 s); 0 where unavailable.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may hold spaces) start at the
    // state, field 3; utime and stime are fields 14 and 15.
    let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return 0.0 };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn gb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e9 / took.as_secs_f64()
}

fn median_took(samples: &[Sample]) -> Duration {
    median(&samples.iter().map(|s| s.took).collect::<Vec<_>>())
}

/// The AES-related CPU features that decide which AES-GCM code *ring*
/// runs (x86-64: VAES + VPCLMULQDQ + AVX2, else AES-NI + PCLMULQDQ
/// (+ AVX + MOVBE), else a constant-time software fallback).
fn aes_cpu_features() -> String {
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find(|l| l.starts_with("flags")).map(str::to_string))
        .unwrap_or_default();
    let has: Vec<&str> = ["aes", "pclmulqdq", "avx", "movbe", "avx2", "vaes", "vpclmulqdq"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    if has.is_empty() {
        "unknown".to_string()
    } else {
        has.join(" ")
    }
}

fn print_table(bytes: u64, rounds: usize, samples: &[Vec<Sample>], cipher_suite: Option<&str>) {
    println!();
    println!(
        "transport: {} MiB one way per connection over loopback, 2 tokio worker threads; median of {rounds} rounds",
        bytes >> 20
    );
    println!("TLS cipher suite negotiated: {}; CPU AES features: {}", cipher_suite.unwrap_or("?"), aes_cpu_features());
    println!();
    println!("{:<46} {:>8} {:>17} {:>15} {:>10}", "path", "GB/s", "spread (min–max)", "CPU s per GiB", "vs TCP");
    let anchor = gb_per_s(bytes, median_took(&samples[0]));
    for (path, samples) in PATHS.iter().zip(samples) {
        let rates: Vec<f64> = samples.iter().map(|s| gb_per_s(bytes, s.took)).collect();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        let rate = gb_per_s(bytes, median_took(samples));
        let cpu: Vec<f64> = samples.iter().map(|s| s.cpu_secs * GIB as f64 / bytes as f64).collect();
        println!(
            "{:<46} {:>8} {:>17} {:>15} {:>10}",
            path.label(),
            sig3(rate),
            format!("{}–{}", sig3(min), sig3(max)),
            sig3(median_f64(&cpu)),
            format!("{}×", sig3(rate / anchor))
        );
    }
    println!();
}
