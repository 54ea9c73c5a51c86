//! `tollway node run`'s settings: a flag, else `TOLLWAY_NODE_<KEY>` in the
//! environment, else `node.toml` in the node's home, else the default
//! (DESIGN §6). A daemon's unit file then needs only `--home`.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tollway_ledger::params::{format_duration, parse_duration_secs};
use tollway_net::Transport;
use tollway_tunnel::session::{DEFAULT_CREDIT_WINDOW_BYTES, DEFAULT_RECEIPT_INTERVAL_BYTES, DEFAULT_UNPAID_TIMEOUT};

pub const FILE_NAME: &str = "node.toml";
const ENV_PREFIX: &str = "TOLLWAY_NODE_";

/// `node.toml`: every key optional (the default then applies), none
/// unknown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeToml {
    key: Option<PathBuf>,
    api: Option<String>,
    listen: Option<IpAddr>,
    transports: Option<Vec<String>>,
    allow_loopback: Option<bool>,
    allow_private: Option<bool>,
    deny_ports: Option<Vec<u16>>,
    max_sessions: Option<usize>,
    max_rate_mbps: Option<u64>,
    credit_window_kib: Option<u64>,
    receipt_interval_kib: Option<u64>,
    unpaid_timeout: Option<String>,
    settle_every: Option<String>,
    settle_min_usd: Option<String>,
    status_secs: Option<u64>,
}

/// What `node init` writes: every key, commented out at its default, so
/// the file documents itself and the defaults stay the binary's.
pub fn template() -> String {
    format!(
        "# Settings of `tollway node run` for this home. A flag overrides a key here,\n\
         # and so does {ENV_PREFIX}<KEY> in the environment (e.g. {ENV_PREFIX}MAX_RATE_MBPS=20).\n\
         # Uncomment a key to change it.\n\
         \n\
         # key = \"node.key\"               # the node's account key (relative to this home)\n\
         # api = \"http://127.0.0.1:7070\"  # the chain's API (else $TOLLWAY_API)\n\
         # listen = \"0.0.0.0\"\n\
         # transports = [\"tls\", \"quic\"]\n\
         # allow_loopback = false         # devnets and tests only\n\
         # allow_private = false          # lets clients reach your LAN: think twice\n\
         # deny_ports = []                # destination ports refused, e.g. [25] for mail\n\
         # max_sessions = 10000\n\
         # max_rate_mbps = 20             # relay at most this each way (default: no cap)\n\
         # credit_window_kib = {}\n\
         # receipt_interval_kib = {}\n\
         # unpaid_timeout = \"{}\"         # how long a client may owe a receipt it has the bytes for\n\
         # settle_every = \"10m\"\n\
         # settle_min_usd = \"0.10\"\n\
         # status_secs = 60\n",
        DEFAULT_CREDIT_WINDOW_BYTES / 1024,
        DEFAULT_RECEIPT_INTERVAL_BYTES / 1024,
        format_duration(DEFAULT_UNPAID_TIMEOUT.as_secs())
    )
}

/// The chain API a command on `home` other than `node run` asks (`node
/// receipts`): `flag`, else `TOLLWAY_NODE_API`, else `node.toml`'s `api`,
/// as `node run` resolves it; `None` leaves it to `$TOLLWAY_API` and the
/// default, as there.
pub fn api_of_home(home: &Path, flag: Option<String>) -> anyhow::Result<Option<String>> {
    let env = |k: &str| std::env::var(format!("{ENV_PREFIX}{k}")).ok().filter(|v| !v.is_empty());
    Ok(flag.or(from_env(&env, "API")?).or(read(home)?.api))
}

/// Reads `home/node.toml`; no file is all defaults.
pub fn read(home: &Path) -> anyhow::Result<NodeToml> {
    let path = home.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeToml::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `node run`'s flags as given (`None` / empty / false: not given).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Flags {
    /// The node's account key (the one its ledger record is under).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The chain node's API [default: $TOLLWAY_API, else http://127.0.0.1:7070].
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// The address to listen on [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    pub listen: Option<IpAddr>,
    /// Transports, comma-separated [default: tls,quic].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub transports: Vec<Transport>,
    /// Let clients reach this machine's loopback (devnets and tests only).
    #[arg(long)]
    pub allow_loopback: bool,
    /// Let clients reach private (LAN) addresses. Think twice.
    #[arg(long)]
    pub allow_private: bool,
    /// A destination port to refuse, e.g. 25; repeat for several.
    #[arg(long = "deny-port", value_name = "PORT")]
    pub deny_ports: Vec<u16>,
    /// Sessions at once [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Relay at most this many Mbit/s each way, over all clients together
    /// (what the node reads from destinations, and what it writes to them),
    /// so the line's owner keeps the rest; busy clients share it equally.
    /// Default: no cap.
    #[arg(long, value_name = "MBPS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_rate_mbps: Option<u64>,
    /// Unpaid bytes a client may receive beyond its newest receipt before
    /// the node pauses it: this node's exposure per session. A larger
    /// window keeps long paths (two hops, slow links) busier [default: 2048].
    #[arg(long, value_name = "KIB")]
    pub credit_window_kib: Option<u64>,
    /// How often clients sign a receipt, in received bytes: at least 64
    /// (each receipt is a signature) and below the credit window
    /// [default: 1024].
    #[arg(long, value_name = "KIB")]
    pub receipt_interval_kib: Option<u64>,
    /// How long a paused client may owe a receipt before the node closes
    /// its session (e.g. 30s, 2m), counted from when the client has
    /// received the bytes that make the receipt due, not from the pause: a
    /// slow link takes long to carry a receipt interval [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub unpaid_timeout: Option<String>,
    /// How often to settle receipts on the chain (e.g. 10m, 30s; 0 never).
    /// A channel is settled when its newest receipt holds at least
    /// --settle-min-usd more than the chain has settled, or when it expires
    /// within two periods; at start, and at stop too, where a channel that
    /// expires within a day is settled whatever its amount [default: 10m].
    #[arg(long, value_name = "DURATION")]
    pub settle_every: Option<String>,
    /// The least a settlement must add to what the chain has settled, in
    /// USD [default: 0.10].
    #[arg(long, value_name = "USD")]
    pub settle_min_usd: Option<String>,
    /// Print the sessions served and the receipts held every N seconds,
    /// when they changed; 0 never [default: 60].
    #[arg(long, value_name = "SECS")]
    pub status_secs: Option<u64>,
}

/// The settings `node run` runs with.
#[derive(Debug, PartialEq)]
pub struct NodeSettings {
    pub home: PathBuf,
    pub key: PathBuf,
    /// `None`: `$TOLLWAY_API`, else the default.
    pub api: Option<String>,
    pub listen: IpAddr,
    pub transports: Vec<Transport>,
    pub allow_loopback: bool,
    pub allow_private: bool,
    pub deny_ports: Vec<u16>,
    pub max_sessions: usize,
    pub max_rate_mbps: Option<u64>,
    pub credit_window_kib: u64,
    pub receipt_interval_kib: u64,
    pub unpaid_timeout: Duration,
    pub settle_every: String,
    pub settle_min_usd: String,
    pub status_secs: u64,
}

/// One setting's value from the environment (`env(KEY)`), parsed; an
/// unparsable value is an error that names the variable.
fn from_env<T: FromStr>(env: &dyn Fn(&str) -> Option<String>, key: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    let Some(text) = env(key) else { return Ok(None) };
    text.trim().parse().map(Some).map_err(|e| anyhow::anyhow!("{ENV_PREFIX}{key}={text:?}: {e}"))
}

/// A comma-separated list from the environment.
fn list_from_env<T: FromStr>(env: &dyn Fn(&str) -> Option<String>, key: &str) -> anyhow::Result<Option<Vec<T>>>
where
    T::Err: std::fmt::Display,
{
    let Some(text) = env(key) else { return Ok(None) };
    let items = text.split(',').map(str::trim).filter(|s| !s.is_empty());
    items
        .map(|s| s.parse().map_err(|e| anyhow::anyhow!("{ENV_PREFIX}{key}={text:?}: {s:?}: {e}")))
        .collect::<anyhow::Result<Vec<T>>>()
        .map(Some)
}

/// A duration setting (`30s`, `2m`) from the first of `flag`, the
/// environment and the file that gives one, else `default`; an unparsable
/// or zero value is an error that names where it came from.
fn duration_setting(
    flag: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<String>,
    key: &str,
    default: Duration,
) -> anyhow::Result<Duration> {
    let (text, origin) = match (flag, env(&key.to_uppercase()), file) {
        (Some(text), _, _) => (text.clone(), format!("--{} {text:?}", key.replace('_', "-"))),
        (None, Some(text), _) => (text.clone(), format!("{ENV_PREFIX}{}={text:?}", key.to_uppercase())),
        (None, None, Some(text)) => (text.clone(), format!("{FILE_NAME}: {key} = {text:?}")),
        (None, None, None) => return Ok(default),
    };
    match parse_duration_secs(&text) {
        Ok(0) => bail!("{origin}: must be at least 1s"),
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(e) => bail!("{origin}: {e}"),
    }
}

impl NodeSettings {
    /// Flag, else environment, else file, else default, key by key.
    pub fn resolve(home: &Path, flags: Flags, file: NodeToml) -> anyhow::Result<NodeSettings> {
        Self::resolve_with(home, flags, file, &|k| std::env::var(format!("{ENV_PREFIX}{k}")).ok().filter(|v| !v.is_empty()))
    }

    /// [`NodeSettings::resolve`] with the environment given (tests).
    pub fn resolve_with(
        home: &Path,
        flags: Flags,
        file: NodeToml,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<NodeSettings> {
        let file_transports = match file.transports {
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| n.parse::<Transport>().map_err(|e| anyhow::anyhow!("{FILE_NAME}: transports: {e}")))
                    .collect::<anyhow::Result<Vec<_>>>()?,
            ),
            None => None,
        };
        let non_empty = |v: Vec<Transport>| (!v.is_empty()).then_some(v);
        let transports = non_empty(flags.transports)
            .or(list_from_env(env, "TRANSPORTS")?)
            .or(file_transports)
            .unwrap_or_else(|| Transport::ALL.to_vec());
        if transports.is_empty() {
            bail!("no transport to serve: give tls, quic or both");
        }
        let deny_ports = match flags.deny_ports {
            given if !given.is_empty() => given,
            _ => list_from_env(env, "DENY_PORTS")?.or(file.deny_ports).unwrap_or_default(),
        };
        // A relative path in the file or the environment is the home's (a
        // flag's is the working directory's, as any path on a command line).
        let key = match (flags.key, from_env::<PathBuf>(env, "KEY")?.or(file.key)) {
            (Some(path), _) => path,
            (None, Some(path)) if path.is_relative() => home.join(path),
            (None, Some(path)) => path,
            (None, None) => bail!(
                "which key is the node's? give --key FILE, or key = \"FILE\" in {}",
                home.join(FILE_NAME).display()
            ),
        };
        let max_rate_mbps = flags.max_rate_mbps.or(from_env(env, "MAX_RATE_MBPS")?).or(file.max_rate_mbps);
        if max_rate_mbps.is_some_and(|m| !(1..=1_000_000).contains(&m)) {
            bail!("max_rate_mbps must be from 1 to 1000000");
        }
        let max_sessions = flags.max_sessions.or(from_env(env, "MAX_SESSIONS")?).or(file.max_sessions).unwrap_or(10_000);
        if !(1..=1_000_000).contains(&max_sessions) {
            // 0 would turn every client away while the node looks healthy.
            bail!("max_sessions must be from 1 to 1000000, not {max_sessions}");
        }
        Ok(NodeSettings {
            home: home.to_path_buf(),
            key,
            api: flags.api.or(from_env(env, "API")?).or(file.api),
            listen: flags.listen.or(from_env(env, "LISTEN")?).or(file.listen).unwrap_or(IpAddr::from([0, 0, 0, 0])),
            transports,
            allow_loopback: flags.allow_loopback || from_env(env, "ALLOW_LOOPBACK")?.or(file.allow_loopback).unwrap_or(false),
            allow_private: flags.allow_private || from_env(env, "ALLOW_PRIVATE")?.or(file.allow_private).unwrap_or(false),
            deny_ports,
            max_sessions,
            max_rate_mbps,
            credit_window_kib: flags
                .credit_window_kib
                .or(from_env(env, "CREDIT_WINDOW_KIB")?)
                .or(file.credit_window_kib)
                .unwrap_or(DEFAULT_CREDIT_WINDOW_BYTES / 1024),
            receipt_interval_kib: flags
                .receipt_interval_kib
                .or(from_env(env, "RECEIPT_INTERVAL_KIB")?)
                .or(file.receipt_interval_kib)
                .unwrap_or(DEFAULT_RECEIPT_INTERVAL_BYTES / 1024),
            unpaid_timeout: duration_setting(flags.unpaid_timeout, env, file.unpaid_timeout, "unpaid_timeout", DEFAULT_UNPAID_TIMEOUT)?,
            settle_every: flags.settle_every.or(from_env(env, "SETTLE_EVERY")?).or(file.settle_every).unwrap_or_else(|| "10m".into()),
            settle_min_usd: flags
                .settle_min_usd
                .or(from_env(env, "SETTLE_MIN_USD")?)
                .or(file.settle_min_usd)
                .unwrap_or_else(|| "0.10".into()),
            status_secs: flags.status_secs.or(from_env(env, "STATUS_SECS")?).or(file.status_secs).unwrap_or(60),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn flags_with_key() -> Flags {
        Flags { key: Some(PathBuf::from("/keys/node.key")), ..Flags::default() }
    }

    #[test]
    fn the_template_is_all_defaults_and_parses() {
        let home = Path::new("/h");
        let uncommented: String = template()
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{}\n", l.split("  #").next().unwrap_or(l)))
            .collect();
        let file: NodeToml = toml::from_str(&uncommented).unwrap();
        let from_file = NodeSettings::resolve_with(home, Flags::default(), file, &no_env).unwrap();
        let defaults = NodeSettings::resolve_with(home, flags_with_key(), NodeToml::default(), &no_env).unwrap();
        // The same but for what the template shows as examples.
        assert_eq!(
            from_file,
            NodeSettings {
                key: PathBuf::from("/h/node.key"),
                api: Some("http://127.0.0.1:7070".into()),
                max_rate_mbps: Some(20),
                ..defaults
            }
        );
        // Commented out, it changes nothing.
        let file: NodeToml = toml::from_str(&template()).unwrap();
        assert_eq!(
            NodeSettings::resolve_with(home, flags_with_key(), file, &no_env).unwrap(),
            NodeSettings::resolve_with(home, flags_with_key(), NodeToml::default(), &no_env).unwrap()
        );
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file() {
        let file: NodeToml =
            toml::from_str("max_rate_mbps = 10\nstatus_secs = 5\ncredit_window_kib = 4096\ntransports = [\"quic\"]\n").unwrap();
        let env = |k: &str| match k {
            "MAX_RATE_MBPS" => Some("20".to_string()),
            "STATUS_SECS" => Some("7".to_string()),
            "DENY_PORTS" => Some("25, 465".to_string()),
            _ => None,
        };
        let flags = Flags { max_rate_mbps: Some(30), ..flags_with_key() };
        let s = NodeSettings::resolve_with(Path::new("/h"), flags, file, &env).unwrap();
        assert_eq!(s.max_rate_mbps, Some(30));
        assert_eq!(s.status_secs, 7);
        assert_eq!(s.credit_window_kib, 4096);
        assert_eq!(s.transports, vec![Transport::Quic]);
        assert_eq!(s.deny_ports, vec![25, 465]);
        assert_eq!(s.key, PathBuf::from("/keys/node.key"));

        // The unpaid timeout, each layer in turn over the one below.
        let timeout = |flag: Option<&str>, env: Option<&str>, file: &str| {
            let flags = Flags { unpaid_timeout: flag.map(String::from), ..flags_with_key() };
            let env_var = |k: &str| env.filter(|_| k == "UNPAID_TIMEOUT").map(String::from);
            let file: NodeToml = toml::from_str(file).unwrap();
            NodeSettings::resolve_with(Path::new("/h"), flags, file, &env_var).unwrap().unpaid_timeout
        };
        let file = "unpaid_timeout = \"2m\"\n";
        assert_eq!(timeout(Some("90s"), Some("45s"), file), Duration::from_secs(90));
        assert_eq!(timeout(None, Some("45s"), file), Duration::from_secs(45));
        assert_eq!(timeout(None, None, file), Duration::from_secs(120));
        assert_eq!(timeout(None, None, ""), DEFAULT_UNPAID_TIMEOUT);
    }

    #[test]
    fn bad_settings_name_where_they_came_from() {
        let err = toml::from_str::<NodeToml>("max_rate_mpbs = 10\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `max_rate_mpbs`") && err.contains("max_rate_mbps"), "{err}");
        let env = |k: &str| (k == "MAX_SESSIONS").then(|| "many".to_string());
        let err = NodeSettings::resolve_with(Path::new("/h"), flags_with_key(), NodeToml::default(), &env).unwrap_err();
        assert!(err.to_string().starts_with("TOLLWAY_NODE_MAX_SESSIONS=\"many\": "), "{err}");
        let err = NodeSettings::resolve_with(Path::new("/h"), Flags::default(), NodeToml::default(), &no_env).unwrap_err();
        assert!(err.to_string().contains("give --key FILE, or key = \"FILE\" in /h/node.toml"), "{err}");
        let file: NodeToml = toml::from_str("transports = [\"udp\"]\n").unwrap();
        let err = NodeSettings::resolve_with(Path::new("/h"), flags_with_key(), file, &no_env).unwrap_err();
        assert!(err.to_string().starts_with("node.toml: transports: "), "{err}");
        let file: NodeToml = toml::from_str("max_rate_mbps = 0\n").unwrap();
        assert!(NodeSettings::resolve_with(Path::new("/h"), flags_with_key(), file, &no_env).is_err());
        let flags = Flags { max_sessions: Some(0), ..flags_with_key() };
        let err = NodeSettings::resolve_with(Path::new("/h"), flags, NodeToml::default(), &no_env).unwrap_err();
        assert!(err.to_string().contains("max_sessions must be from 1 to 1000000, not 0"), "{err}");
        let env = |k: &str| (k == "UNPAID_TIMEOUT").then(|| "soon".to_string());
        let err = NodeSettings::resolve_with(Path::new("/h"), flags_with_key(), NodeToml::default(), &env).unwrap_err();
        assert!(err.to_string().starts_with("TOLLWAY_NODE_UNPAID_TIMEOUT=\"soon\": "), "{err}");
        let file: NodeToml = toml::from_str("unpaid_timeout = \"0s\"\n").unwrap();
        let err = NodeSettings::resolve_with(Path::new("/h"), flags_with_key(), file, &no_env).unwrap_err();
        assert_eq!(err.to_string(), "node.toml: unpaid_timeout = \"0s\": must be at least 1s");
        let flags = Flags { unpaid_timeout: Some("30 parsecs".into()), ..flags_with_key() };
        let err = NodeSettings::resolve_with(Path::new("/h"), flags, NodeToml::default(), &no_env).unwrap_err();
        assert!(err.to_string().starts_with("--unpaid-timeout \"30 parsecs\": "), "{err}");
    }
}
