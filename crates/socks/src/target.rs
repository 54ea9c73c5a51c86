//! Where a client wants to go: a host (an IP address, or a name the exit
//! resolves so DNS never leaks from the client, DESIGN §4) and a port.
//! Written `host:port` (IPv6 in brackets) in HTTP CONNECT, in logs and in
//! the tunnel protocol.

use crate::error::{AddrError, DomainError};
use crate::limits::{MAX_DOMAIN_BYTES, MAX_DOMAIN_LABEL_BYTES};
use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A host name that can be sent on: 1..=255 bytes of letters, digits,
/// `-`, `_` and `.`, no empty label except one trailing dot, labels of at
/// most 63 bytes, and not an IP address (that is [`Host::Ip`], so one
/// destination has one representation). Only constructed checked, so
/// encoding one can never overflow SOCKS5's length octet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    pub fn new(name: &str) -> Result<DomainName, DomainError> {
        DomainName::from_bytes(name.as_bytes())
    }

    /// Checks a name received as bytes (a SOCKS5 DOMAINNAME field).
    pub fn from_bytes(name: &[u8]) -> Result<DomainName, DomainError> {
        check_domain(name)?;
        // All ASCII once checked, so byte to char is exact.
        Ok(DomainName(name.iter().map(|&b| char::from(b)).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn check_domain(name: &[u8]) -> Result<(), DomainError> {
    if name.is_empty() {
        return Err(DomainError::Empty);
    }
    if name.len() > MAX_DOMAIN_BYTES {
        return Err(DomainError::TooLong(name.len()));
    }
    if let Some((at, &byte)) = name
        .iter()
        .enumerate()
        .find(|(_, b)| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        return Err(DomainError::BadByte { byte, at });
    }
    // A fully qualified name may end in one dot ("example.com.").
    let labels = name.strip_suffix(b".").unwrap_or(name);
    for label in labels.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(DomainError::EmptyLabel);
        }
        if label.len() > MAX_DOMAIN_LABEL_BYTES {
            return Err(DomainError::LabelTooLong(label.len()));
        }
    }
    // Only digits and dots can spell an IPv4 address here (':' is refused
    // above, so no IPv6).
    if parse_ascii::<Ipv4Addr>(name).is_some() {
        return Err(DomainError::IpLiteral);
    }
    Ok(())
}

fn parse_ascii<T: FromStr>(bytes: &[u8]) -> Option<T> {
    core::str::from_utf8(bytes).ok()?.parse().ok()
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DomainName {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<DomainName, DomainError> {
        DomainName::new(s)
    }
}

impl TryFrom<&str> for DomainName {
    type Error = DomainError;
    fn try_from(s: &str) -> Result<DomainName, DomainError> {
        DomainName::new(s)
    }
}

impl AsRef<str> for DomainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A destination host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    Ip(IpAddr),
    /// Resolved by the exit, never by the client.
    Domain(DomainName),
}

impl Host {
    /// A host as a client named it: `example.com`, `192.0.2.1`, `2001:db8::1`
    /// or `[2001:db8::1]`. An IP address in text becomes [`Host::Ip`], even
    /// when it came in SOCKS5's domain-name field: there is nothing to
    /// resolve, and one destination keeps one representation.
    pub fn from_name_bytes(name: &[u8]) -> Result<Host, DomainError> {
        if let Some(ip) = parse_ascii::<IpAddr>(name) {
            return Ok(Host::Ip(ip));
        }
        if let Some(ip) = name
            .strip_prefix(b"[")
            .and_then(|n| n.strip_suffix(b"]"))
            .and_then(parse_ascii::<Ipv6Addr>)
        {
            return Ok(Host::Ip(IpAddr::V6(ip)));
        }
        DomainName::from_bytes(name).map(Host::Domain)
    }

    pub fn domain(&self) -> Option<&DomainName> {
        match self {
            Host::Domain(name) => Some(name),
            Host::Ip(_) => None,
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        Host::Ip(ip)
    }
}

impl From<Ipv4Addr> for Host {
    fn from(ip: Ipv4Addr) -> Host {
        Host::Ip(IpAddr::V4(ip))
    }
}

impl From<Ipv6Addr> for Host {
    fn from(ip: Ipv6Addr) -> Host {
        Host::Ip(IpAddr::V6(ip))
    }
}

impl From<DomainName> for Host {
    fn from(name: DomainName) -> Host {
        Host::Domain(name)
    }
}

/// The bare address or name; [`Target`] adds brackets around IPv6.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Domain(name) => name.fmt(f),
        }
    }
}

impl FromStr for Host {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Host, DomainError> {
        Host::from_name_bytes(s.as_bytes())
    }
}

/// A destination: host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    pub fn new(host: impl Into<Host>, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    /// `0.0.0.0:0`, the bound address of a failure reply.
    pub fn unspecified() -> Target {
        Target::new(Ipv4Addr::UNSPECIFIED, 0)
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target::new(addr.ip(), addr.port())
    }
}

/// `host:port`, `192.0.2.1:port` or `[2001:db8::1]:port`; parses back with
/// [`FromStr`].
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            host => write!(f, "{host}:{}", self.port),
        }
    }
}

/// `host:port` with the port required (RFC 9110 §9.3.6: CONNECT's
/// authority-form, RFC 3986 host syntax without user info). IPv6 must be
/// in brackets: `[2001:db8::1]:443`.
impl FromStr for Target {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Target, AddrError> {
        if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or(AddrError::BadIpv6)?;
            let ip: Ipv6Addr = inside.parse().map_err(|_| AddrError::BadIpv6)?;
            let port = after.strip_prefix(':').ok_or(AddrError::MissingPort)?;
            return Ok(Target::new(ip, parse_port(port)?));
        }
        if s.contains("://") {
            return Err(AddrError::Url);
        }
        let (host, port) = s.rsplit_once(':').ok_or(AddrError::MissingPort)?;
        if host.contains(':')
            && host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(AddrError::UnbracketedIpv6);
        }
        let port = parse_port(port)?;
        Ok(Target::new(Host::from_name_bytes(host.as_bytes())?, port))
    }
}

/// RFC 3986's `port = *DIGIT`, required here, and within 16 bits.
/// (`u16::from_str` alone would take a leading '+'.)
fn parse_port(s: &str) -> Result<u16, AddrError> {
    if s.is_empty() {
        return Err(AddrError::MissingPort);
    }
    if s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::BadPort);
    }
    s.parse().map_err(|_| AddrError::BadPort)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check(input: &str, want: Expect) {
        let got = match input.parse::<Target>() {
            Ok(t) => {
                let shown = t.to_string();
                assert_eq!(
                    shown.parse::<Target>().as_ref(),
                    Ok(&t),
                    "display must parse back"
                );
                format!("{shown}  {:?}", t.host)
            }
            Err(e) => format!("error: {e}"),
        };
        want.assert_eq(&got);
    }

    #[test]
    fn targets_parse_from_host_port() {
        check(
            "example.com:443",
            expect![[r#"example.com:443  Domain(DomainName("example.com"))"#]],
        );
        check(
            "Example.COM.:80",
            expect![[r#"Example.COM.:80  Domain(DomainName("Example.COM."))"#]],
        );
        check(
            "_srv.a-b.example:0",
            expect![[r#"_srv.a-b.example:0  Domain(DomainName("_srv.a-b.example"))"#]],
        );
        check(
            "localhost:65535",
            expect![[r#"localhost:65535  Domain(DomainName("localhost"))"#]],
        );
        check("192.0.2.1:8080", expect!["192.0.2.1:8080  Ip(192.0.2.1)"]);
        check(
            "[2001:db8::1]:443",
            expect!["[2001:db8::1]:443  Ip(2001:db8::1)"],
        );
        check(
            "[::ffff:192.0.2.1]:443",
            expect!["[::ffff:192.0.2.1]:443  Ip(::ffff:192.0.2.1)"],
        );
        check("[::1]:0080", expect!["[::1]:80  Ip(::1)"]);
        // Not an IPv4 address to Rust, nor to us: a name for the exit.
        check(
            "1.2.3:80",
            expect![[r#"1.2.3:80  Domain(DomainName("1.2.3"))"#]],
        );
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        check(
            "example.com",
            expect![
                "error: missing port: write host:port, e.g. example.com:443 or [2001:db8::1]:443"
            ],
        );
        check(
            "example.com:",
            expect![
                "error: missing port: write host:port, e.g. example.com:443 or [2001:db8::1]:443"
            ],
        );
        check(
            "[::1]",
            expect![
                "error: missing port: write host:port, e.g. example.com:443 or [2001:db8::1]:443"
            ],
        );
        check(
            "[::1]443",
            expect![
                "error: missing port: write host:port, e.g. example.com:443 or [2001:db8::1]:443"
            ],
        );
        check(
            "example.com:65536",
            expect!["error: the port is not a number from 0 to 65535"],
        );
        check(
            "example.com:+80",
            expect!["error: the port is not a number from 0 to 65535"],
        );
        check(
            "example.com:000080",
            expect!["error: the port is not a number from 0 to 65535"],
        );
        check(
            "example.com:8 0",
            expect!["error: the port is not a number from 0 to 65535"],
        );
        check(
            "::1:443",
            expect!["error: an IPv6 address needs brackets: [2001:db8::1]:443"],
        );
        check(
            "https://example.com:443",
            expect!["error: a URL is not a host:port: write e.g. example.com:443"],
        );
        check(
            "a:b:443",
            expect!["error: an IPv6 address needs brackets: [2001:db8::1]:443"],
        );
        check("host:name:443", expect!["error: byte 0x3a at offset 4 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode)"]);
        check(
            "[::1:443",
            expect!["error: the text in brackets is not an IPv6 address"],
        );
        check(
            "[example.com]:443",
            expect!["error: the text in brackets is not an IPv6 address"],
        );
        check(
            "[192.0.2.1]:443",
            expect!["error: the text in brackets is not an IPv6 address"],
        );
        check(
            "[fe80::1%eth0]:443",
            expect!["error: the text in brackets is not an IPv6 address"],
        );
        check(":443", expect!["error: the host name is empty"]);
        check("exa mple.com:443", expect!["error: byte 0x20 at offset 3 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode)"]);
        check("user@example.com:443", expect!["error: byte 0x40 at offset 4 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode)"]);
        check("bücher.de:443", expect!["error: byte 0xc3 at offset 1 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode)"]);
        check(
            "a..b:443",
            expect![
                "error: the host name has an empty label (two dots in a row, or a leading dot)"
            ],
        );
        check(
            ".example.com:443",
            expect![
                "error: the host name has an empty label (two dots in a row, or a leading dot)"
            ],
        );
        check(
            ".:443",
            expect![
                "error: the host name has an empty label (two dots in a row, or a leading dot)"
            ],
        );
    }

    #[test]
    fn domain_names_hold_to_their_limits() {
        let label = "a".repeat(MAX_DOMAIN_LABEL_BYTES);
        assert!(DomainName::new(&label).is_ok());
        assert_eq!(
            DomainName::new(&format!("{label}a.com")),
            Err(DomainError::LabelTooLong(MAX_DOMAIN_LABEL_BYTES + 1))
        );
        // 4 labels of 63 and dots: 255 bytes exactly, then one more.
        let longest = [label.as_str(); 4].join(".");
        let longest = &longest[..MAX_DOMAIN_BYTES];
        assert_eq!(longest.len(), 255);
        assert_eq!(DomainName::new(longest).map(|d| d.as_str().len()), Ok(255));
        assert_eq!(
            DomainName::new(&format!("{longest}a")),
            Err(DomainError::TooLong(256))
        );
        assert_eq!(DomainName::new("192.0.2.1"), Err(DomainError::IpLiteral));
        assert_eq!(DomainName::new(""), Err(DomainError::Empty));
        assert_eq!(
            DomainName::new("a\0b"),
            Err(DomainError::BadByte { byte: 0, at: 1 })
        );
        assert_eq!(
            DomainName::new("a\x7fb"),
            Err(DomainError::BadByte { byte: 0x7f, at: 1 })
        );
    }

    #[test]
    fn ip_literals_become_ip_hosts() {
        let v6 = Host::Ip(
            "2001:db8::1"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        );
        assert_eq!(Host::from_name_bytes(b"2001:db8::1"), Ok(v6.clone()));
        assert_eq!(Host::from_name_bytes(b"[2001:db8::1]"), Ok(v6));
        assert_eq!(
            Host::from_name_bytes(b"10.0.0.1"),
            Ok(Host::from(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert!(matches!(
            Host::from_name_bytes(b"10.0.0.1."),
            Ok(Host::Domain(_))
        ));
        assert_eq!("[::1]".parse::<Host>(), Ok(Host::from(Ipv6Addr::LOCALHOST)));
        assert_eq!(Host::from(Ipv6Addr::LOCALHOST).to_string(), "::1");
        assert_eq!(Target::new(Ipv6Addr::LOCALHOST, 1).to_string(), "[::1]:1");
        assert_eq!(
            Target::from(SocketAddr::from(([127, 0, 0, 1], 1080))).to_string(),
            "127.0.0.1:1080"
        );
    }
}
