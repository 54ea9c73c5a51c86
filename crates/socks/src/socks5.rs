//! SOCKS5 (RFC 1928) and its username/password authentication (RFC 1929).
//!
//! A session: the client's greeting lists the authentication methods it
//! offers, the server picks one ([`choose_method`], [`method_reply`]);
//! for username/password the client then sends its credentials
//! ([`parse_auth`], [`auth_reply`]); then one request ([`parse_request`])
//! answered with a [`Reply`]. After a successful CONNECT reply the
//! connection carries the tunnel's bytes.

use crate::credentials::Credentials;
use crate::error::{DomainError, ParseError};
use crate::target::{Host, Target};
use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// VER in every SOCKS5 message.
pub(crate) const SOCKS_VERSION: u8 = 5;
/// VER of the RFC 1929 sub-negotiation.
const AUTH_VERSION: u8 = 1;
/// RFC 1929 §2: STATUS 0x00 is success, anything else failure.
const AUTH_SUCCESS: u8 = 0x00;
const AUTH_FAILURE: u8 = 0x01;

// ATYP, RFC 1928 §5.
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Reads a message front to back; running off the end is `Incomplete`.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        let b = *self.buf.get(self.pos).ok_or(ParseError::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let bytes = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.get(..n))
            .ok_or(ParseError::Incomplete)?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        self.bytes(N)?
            .try_into()
            .map_err(|_| ParseError::Incomplete)
    }

    fn u16_be(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn version(&mut self) -> Result<(), ParseError> {
        match self.u8()? {
            SOCKS_VERSION => Ok(()),
            other => Err(ParseError::UnsupportedSocksVersion(other)),
        }
    }
}

// ---- method negotiation (RFC 1928 §3) -----------------------------------

/// An authentication method code. Any octet can be offered; the named
/// ones are those this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(pub u8);

impl Method {
    pub const NO_AUTH: Method = Method(0x00);
    pub const GSSAPI: Method = Method(0x01);
    /// RFC 1929.
    pub const USERNAME_PASSWORD: Method = Method(0x02);
    /// The server's answer when it accepts none of the offered methods;
    /// the client then closes.
    pub const NO_ACCEPTABLE: Method = Method(0xff);
}

/// The client's first message: VER, NMETHODS, METHODS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// As offered, in order, duplicates kept (1..=255 of them).
    pub methods: Vec<Method>,
}

impl Greeting {
    pub fn offers(&self, method: Method) -> bool {
        self.methods.contains(&method)
    }

    /// The greeting's bytes (the client's side, for tests and chaining).
    /// A greeting holds at most 255 methods; any beyond are not written.
    pub fn encode(&self) -> Vec<u8> {
        let methods = &self.methods[..self.methods.len().min(255)];
        let mut out = Vec::with_capacity(2 + methods.len());
        out.extend([SOCKS_VERSION, methods.len() as u8]);
        out.extend(methods.iter().map(|m| m.0));
        out
    }
}

/// Parses a greeting: `Ok((greeting, bytes used))`.
pub fn parse_greeting(buf: &[u8]) -> Result<(Greeting, usize), ParseError> {
    let mut cur = Cursor::new(buf);
    cur.version()?;
    let n_methods = cur.u8()?;
    if n_methods == 0 {
        return Err(ParseError::NoMethods);
    }
    let methods = cur
        .bytes(usize::from(n_methods))?
        .iter()
        .map(|&m| Method(m))
        .collect();
    Ok((Greeting { methods }, cur.pos))
}

/// Whether the front end asks for a username and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthPolicy {
    /// No credentials needed (the default on 127.0.0.1). A client that
    /// offers only username/password still gets it, and whatever it sends
    /// is accepted: refusing such a client would help no one.
    Open,
    /// Only username/password; a client that does not offer it is told
    /// no method is acceptable.
    PasswordRequired,
}

/// The server's pick from a greeting (RFC 1928 §3); [`Method::NO_ACCEPTABLE`]
/// when none will do, after which the driver sends the reply and closes.
pub fn choose_method(greeting: &Greeting, policy: AuthPolicy) -> Method {
    let candidates: &[Method] = match policy {
        AuthPolicy::Open => &[Method::NO_AUTH, Method::USERNAME_PASSWORD],
        AuthPolicy::PasswordRequired => &[Method::USERNAME_PASSWORD],
    };
    candidates
        .iter()
        .copied()
        .find(|&m| greeting.offers(m))
        .unwrap_or(Method::NO_ACCEPTABLE)
}

/// The method-selection message: VER, METHOD.
pub fn method_reply(method: Method) -> [u8; 2] {
    [SOCKS_VERSION, method.0]
}

// ---- username/password (RFC 1929) ----------------------------------------

/// Parses the RFC 1929 request: VER=1, ULEN, UNAME, PLEN, PASSWD.
/// Both fields must be UTF-8 (see [`Credentials`]).
pub fn parse_auth(buf: &[u8]) -> Result<(Credentials, usize), ParseError> {
    let mut cur = Cursor::new(buf);
    let version = cur.u8()?;
    if version != AUTH_VERSION {
        return Err(ParseError::UnsupportedAuthVersion(version));
    }
    let username_len = cur.u8()?;
    let username = cur.bytes(usize::from(username_len))?;
    let password_len = cur.u8()?;
    let password = cur.bytes(usize::from(password_len))?;
    let credentials = Credentials::from_bytes(username, password)?;
    Ok((credentials, cur.pos))
}

/// The RFC 1929 reply: VER=1, STATUS. On failure the server must close
/// the connection after sending it.
pub fn auth_reply(success: bool) -> [u8; 2] {
    [
        AUTH_VERSION,
        if success { AUTH_SUCCESS } else { AUTH_FAILURE },
    ]
}

impl Credentials {
    /// The RFC 1929 request carrying these credentials (the client's
    /// side). Fits by construction: each field is at most 255 bytes.
    pub fn encode_socks5(&self) -> Vec<u8> {
        let (user, pass) = (self.username().as_bytes(), self.password().as_bytes());
        let mut out = Vec::with_capacity(3 + user.len() + pass.len());
        out.extend([AUTH_VERSION, user.len() as u8]);
        out.extend_from_slice(user);
        out.push(pass.len() as u8);
        out.extend_from_slice(pass);
        out
    }
}

// ---- requests and replies (RFC 1928 §4-6) --------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    /// Parsed, but answered with [`ReplyCode::CommandNotSupported`].
    Bind,
    /// Parsed, but answered with [`ReplyCode::CommandNotSupported`].
    UdpAssociate,
}

impl Command {
    pub fn code(self) -> u8 {
        match self {
            Command::Connect => 0x01,
            Command::Bind => 0x02,
            Command::UdpAssociate => 0x03,
        }
    }

    pub fn from_code(code: u8) -> Option<Command> {
        match code {
            0x01 => Some(Command::Connect),
            0x02 => Some(Command::Bind),
            0x03 => Some(Command::UdpAssociate),
            _ => None,
        }
    }

    /// Whether Tollway carries it: CONNECT only (TCP tunnels, DESIGN §4).
    pub fn is_supported(self) -> bool {
        self == Command::Connect
    }
}

/// VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: Target,
}

impl Request {
    /// The request's bytes (the client's side, for tests and chaining).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(crate::limits::MAX_REQUEST_BYTES);
        out.extend([SOCKS_VERSION, self.command.code(), 0x00]);
        write_target(&self.target, &mut out);
        out
    }
}

/// Parses a request. A name in the DOMAINNAME field that spells an IP
/// address comes back as [`Host::Ip`]; any other name must be a valid
/// [`crate::DomainName`].
pub fn parse_request(buf: &[u8]) -> Result<(Request, usize), ParseError> {
    let mut cur = Cursor::new(buf);
    cur.version()?;
    let code = cur.u8()?;
    let command = Command::from_code(code).ok_or(ParseError::UnknownCommand(code))?;
    reserved(&mut cur)?;
    let target = read_target(&mut cur)?;
    Ok((Request { command, target }, cur.pos))
}

/// REP, RFC 1928 §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    Succeeded,
    GeneralFailure,
    NotAllowedByRuleset,
    NetworkUnreachable,
    HostUnreachable,
    ConnectionRefused,
    TtlExpired,
    CommandNotSupported,
    AddressTypeNotSupported,
}

impl ReplyCode {
    pub const ALL: [ReplyCode; 9] = [
        ReplyCode::Succeeded,
        ReplyCode::GeneralFailure,
        ReplyCode::NotAllowedByRuleset,
        ReplyCode::NetworkUnreachable,
        ReplyCode::HostUnreachable,
        ReplyCode::ConnectionRefused,
        ReplyCode::TtlExpired,
        ReplyCode::CommandNotSupported,
        ReplyCode::AddressTypeNotSupported,
    ];

    pub fn code(self) -> u8 {
        match self {
            ReplyCode::Succeeded => 0x00,
            ReplyCode::GeneralFailure => 0x01,
            ReplyCode::NotAllowedByRuleset => 0x02,
            ReplyCode::NetworkUnreachable => 0x03,
            ReplyCode::HostUnreachable => 0x04,
            ReplyCode::ConnectionRefused => 0x05,
            ReplyCode::TtlExpired => 0x06,
            ReplyCode::CommandNotSupported => 0x07,
            ReplyCode::AddressTypeNotSupported => 0x08,
        }
    }

    pub fn from_code(code: u8) -> Option<ReplyCode> {
        ReplyCode::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// RFC 1928's wording.
impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyCode::Succeeded => "succeeded",
            ReplyCode::GeneralFailure => "general SOCKS server failure",
            ReplyCode::NotAllowedByRuleset => "connection not allowed by ruleset",
            ReplyCode::NetworkUnreachable => "network unreachable",
            ReplyCode::HostUnreachable => "host unreachable",
            ReplyCode::ConnectionRefused => "connection refused",
            ReplyCode::TtlExpired => "TTL expired",
            ReplyCode::CommandNotSupported => "command not supported",
            ReplyCode::AddressTypeNotSupported => "address type not supported",
        })
    }
}

/// VER, REP, RSV, ATYP, BND.ADDR, BND.PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    /// For CONNECT, the address the server bound to reach the target.
    /// Tollway's exit is elsewhere, so the driver may send its own local
    /// address, or `0.0.0.0:0`, which clients accept.
    pub bound: Target,
}

impl Reply {
    pub fn success(bound: Target) -> Reply {
        Reply {
            code: ReplyCode::Succeeded,
            bound,
        }
    }

    /// A refusal; the bound address is `0.0.0.0:0`. The driver closes the
    /// connection after sending it (RFC 1928 §6: within 10 seconds).
    pub fn failure(code: ReplyCode) -> Reply {
        Reply {
            code,
            bound: Target::unspecified(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(crate::limits::MAX_REQUEST_BYTES);
        out.extend([SOCKS_VERSION, self.code.code(), 0x00]);
        write_target(&self.bound, &mut out);
        out
    }
}

/// Parses a reply (the client's side, for tests and chaining).
pub fn parse_reply(buf: &[u8]) -> Result<(Reply, usize), ParseError> {
    let mut cur = Cursor::new(buf);
    cur.version()?;
    let code = cur.u8()?;
    let code = ReplyCode::from_code(code).ok_or(ParseError::UnknownReplyCode(code))?;
    reserved(&mut cur)?;
    let bound = read_target(&mut cur)?;
    Ok((Reply { code, bound }, cur.pos))
}

/// RSV: "X'00'" (RFC 1928 §4). Refused otherwise: a client that gets this
/// wrong has its framing wrong, and nothing after it can be trusted.
fn reserved(cur: &mut Cursor<'_>) -> Result<(), ParseError> {
    match cur.u8()? {
        0x00 => Ok(()),
        other => Err(ParseError::NonZeroReserved(other)),
    }
}

/// ATYP, ADDR, PORT (RFC 1928 §5).
fn read_target(cur: &mut Cursor<'_>) -> Result<Target, ParseError> {
    let host = match cur.u8()? {
        ATYP_IPV4 => Host::from(Ipv4Addr::from(cur.array::<4>()?)),
        ATYP_IPV6 => Host::from(Ipv6Addr::from(cur.array::<16>()?)),
        ATYP_DOMAIN => {
            let len = cur.u8()?;
            // Refused before waiting for bytes that are not coming.
            if len == 0 {
                return Err(DomainError::Empty.into());
            }
            Host::from_name_bytes(cur.bytes(usize::from(len))?)?
        }
        other => return Err(ParseError::UnsupportedAddressType(other)),
    };
    let port = cur.u16_be()?;
    Ok(Target { host, port })
}

fn write_target(target: &Target, out: &mut Vec<u8>) {
    match &target.host {
        Host::Ip(IpAddr::V4(ip)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        Host::Ip(IpAddr::V6(ip)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
        Host::Domain(name) => {
            let name = name.as_str().as_bytes();
            // A DomainName is at most MAX_DOMAIN_BYTES (255) by construction.
            out.extend([ATYP_DOMAIN, name.len() as u8]);
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(&target.port.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::DomainName;
    use expect_test::{expect, Expect};

    type Parser<T> = fn(&[u8]) -> Result<(T, usize), ParseError>;

    /// One parse, shown as the value and the bytes used, or the error's
    /// message.
    fn show<T: fmt::Debug>(result: Result<(T, usize), ParseError>) -> String {
        match result {
            Ok((value, used)) => format!("{value:?} (used {used})"),
            Err(e) => format!("error: {e}"),
        }
    }

    fn check<T: fmt::Debug>(parse: Parser<T>, input: &[u8], want: Expect) {
        want.assert_eq(&show(parse(input)));
    }

    /// A complete message: every strict prefix is `Incomplete`, the whole
    /// parses using every byte, and trailing bytes are left unused.
    fn check_complete<T: fmt::Debug + PartialEq + Clone>(parse: Parser<T>, input: &[u8]) -> T {
        for cut in 0..input.len() {
            assert_eq!(
                parse(&input[..cut]).err(),
                Some(ParseError::Incomplete),
                "{input:02x?} cut at {cut}"
            );
        }
        let (value, used) = parse(input).unwrap_or_else(|e| panic!("{input:02x?}: {e}"));
        assert_eq!(used, input.len());
        let mut longer = input.to_vec();
        longer.extend_from_slice(b"\x05\x01\x00tunnel bytes");
        assert_eq!(parse(&longer), Ok((value.clone(), used)));
        value
    }

    fn target(s: &str) -> Target {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn greetings_parse_and_reencode() {
        for input in [
            &b"\x05\x01\x00"[..],
            b"\x05\x02\x00\x02",
            b"\x05\x03\x02\x02\xff",
        ] {
            let greeting = check_complete(parse_greeting, input);
            assert_eq!(greeting.encode(), input);
        }
        let all: Vec<u8> = [5, 255].into_iter().chain(0..=254).collect();
        assert_eq!(check_complete(parse_greeting, &all).methods.len(), 255);
        check(
            parse_greeting,
            b"\x05\x02\x00\x02",
            expect!["Greeting { methods: [Method(0), Method(2)] } (used 4)"],
        );
        check(
            parse_greeting,
            b"\x05\x00",
            expect!["error: the SOCKS5 greeting offers no authentication methods"],
        );
        check(
            parse_greeting,
            b"\x04\x01\x00\x50",
            expect!["error: SOCKS version 4 is not supported: configure the client for SOCKS5"],
        );
        check(
            parse_greeting,
            b"\x00",
            expect!["error: SOCKS version 0 is not supported: configure the client for SOCKS5"],
        );
        // A bad version is refused from its first byte on.
        check(
            parse_greeting,
            b"\x06",
            expect!["error: SOCKS version 6 is not supported: configure the client for SOCKS5"],
        );
    }

    #[test]
    fn the_server_picks_a_method_by_policy() {
        let greeting = |methods: &[u8]| Greeting {
            methods: methods.iter().map(|&m| Method(m)).collect(),
        };
        let cases: [(&[u8], AuthPolicy, Method); 8] = [
            (&[0], AuthPolicy::Open, Method::NO_AUTH),
            (&[2, 0], AuthPolicy::Open, Method::NO_AUTH),
            (&[2], AuthPolicy::Open, Method::USERNAME_PASSWORD),
            (&[1], AuthPolicy::Open, Method::NO_ACCEPTABLE),
            (&[0], AuthPolicy::PasswordRequired, Method::NO_ACCEPTABLE),
            (
                &[0, 2],
                AuthPolicy::PasswordRequired,
                Method::USERNAME_PASSWORD,
            ),
            (
                &[1, 0xff],
                AuthPolicy::PasswordRequired,
                Method::NO_ACCEPTABLE,
            ),
            (
                &[0xff, 0x80, 0x02],
                AuthPolicy::PasswordRequired,
                Method::USERNAME_PASSWORD,
            ),
        ];
        for (offered, policy, want) in cases {
            assert_eq!(
                choose_method(&greeting(offered), policy),
                want,
                "{offered:?} {policy:?}"
            );
        }
        assert_eq!(method_reply(Method::NO_AUTH), [0x05, 0x00]);
        assert_eq!(method_reply(Method::USERNAME_PASSWORD), [0x05, 0x02]);
        assert_eq!(method_reply(Method::NO_ACCEPTABLE), [0x05, 0xff]);
    }

    #[test]
    fn username_password_parses_and_reencodes() {
        for input in [
            &b"\x01\x05alice\x06s3cret"[..],
            b"\x01\x00\x00",
            b"\x01\x01u\x00",
            b"\x01\x03\xc3\xa9t\x02\xc3\xa9",
        ] {
            let credentials = check_complete(parse_auth, input);
            assert_eq!(credentials.encode_socks5(), input);
        }
        let long = "x".repeat(255);
        let max = Credentials::new(long.clone(), long).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_complete(parse_auth, &max.encode_socks5()), max);
        check(
            parse_auth,
            b"\x01\x05alice\x06s3cret",
            expect![[r#"Credentials { username: "alice", password: "<redacted>" } (used 14)"#]],
        );
        check(parse_auth, b"\x05\x05alice\x06s3cret", expect!["error: username/password sub-negotiation version 5 is not supported (RFC 1929 is version 1)"]);
        check(
            parse_auth,
            b"\x01\x02\xff\xfe\x01p",
            expect!["error: the username is not valid UTF-8"],
        );
        check(
            parse_auth,
            b"\x01\x01u\x01\x80",
            expect!["error: the password is not valid UTF-8"],
        );
        assert_eq!(auth_reply(true), [0x01, 0x00]);
        assert_eq!(auth_reply(false), [0x01, 0x01]);
    }

    #[test]
    fn requests_parse_and_reencode() {
        let cases: [(&[u8], Expect); 7] = [
            (b"\x05\x01\x00\x01\xc0\x00\x02\x01\x01\xbb", expect!["CONNECT 192.0.2.1:443"]),
            (
                b"\x05\x01\x00\x04\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x50",
                expect!["CONNECT [2001:db8::1]:80"],
            ),
            (b"\x05\x01\x00\x03\x0bexample.com\x01\xbb", expect!["CONNECT example.com:443"]),
            (b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00", expect!["BIND 0.0.0.0:0"]),
            (b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00", expect!["UDP ASSOCIATE 0.0.0.0:0"]),
            (b"\x05\x01\x00\x03\x01a\xff\xff", expect!["CONNECT a:65535"]),
            (b"\x05\x01\x00\x03\x0cexample.com.\x00\x00", expect!["CONNECT example.com.:0"]),
        ];
        for (input, want) in cases {
            let request = check_complete(parse_request, input);
            assert_eq!(request.encode(), input);
            let command = match request.command {
                Command::Connect => "CONNECT",
                Command::Bind => "BIND",
                Command::UdpAssociate => "UDP ASSOCIATE",
            };
            want.assert_eq(&format!("{command} {}", request.target));
        }
        // The longest name, and a request of the longest size.
        let name = vec!["a".repeat(63); 4].join(".")[..255].to_string();
        let request = Request {
            command: Command::Connect,
            target: Target::new(
                DomainName::new(&name).unwrap_or_else(|e| panic!("{e}")),
                443,
            ),
        };
        let bytes = request.encode();
        assert_eq!(bytes.len(), crate::limits::MAX_REQUEST_BYTES);
        assert_eq!(check_complete(parse_request, &bytes), request);
    }

    #[test]
    fn ip_literals_in_the_domain_field_become_addresses() {
        let (request, _) = parse_request(b"\x05\x01\x00\x03\x0810.0.0.1\x00\x50")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.target.host, Host::from(Ipv4Addr::new(10, 0, 0, 1)));
        // ...and so re-encode as an address, which parses to the same value.
        assert_eq!(
            parse_request(&request.encode()).map(|(r, _)| r),
            Ok(request)
        );
        let (request, _) =
            parse_request(b"\x05\x01\x00\x03\x05[::1]\x00\x50").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.target, target("[::1]:80"));
        let (request, _) =
            parse_request(b"\x05\x01\x00\x03\x03::1\x00\x50").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.target, target("[::1]:80"));
    }

    #[test]
    fn bad_requests_are_refused_with_the_right_reply() {
        let cases: [(&[u8], Expect); 13] = [
            (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", expect!["SOCKS version 4 is not supported: configure the client for SOCKS5 -> None"]),
            (b"\x05\x00\x00\x01", expect!["SOCKS5 command 0x00 does not exist (CONNECT is 0x01) -> Some(CommandNotSupported)"]),
            (b"\x05\x04", expect!["SOCKS5 command 0x04 does not exist (CONNECT is 0x01) -> Some(CommandNotSupported)"]),
            (b"\x05\x01\x01\x01", expect!["the reserved byte of a SOCKS5 request or reply must be 0x00, got 0x01 -> Some(GeneralFailure)"]),
            (b"\x05\x01\x00\x02\x00\x00", expect!["SOCKS5 address type 0x02 does not exist (IPv4 is 0x01, a domain name 0x03, IPv6 0x04) -> Some(AddressTypeNotSupported)"]),
            (b"\x05\x01\x00\x00", expect!["SOCKS5 address type 0x00 does not exist (IPv4 is 0x01, a domain name 0x03, IPv6 0x04) -> Some(AddressTypeNotSupported)"]),
            (b"\x05\x01\x00\x03\x00", expect!["bad destination host name: the host name is empty -> Some(GeneralFailure)"]),
            (b"\x05\x01\x00\x03\x03a\x00b\x00\x50", expect!["bad destination host name: byte 0x00 at offset 1 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode) -> Some(GeneralFailure)"]),
            (b"\x05\x01\x00\x03\x03a\nb\x00\x50", expect!["bad destination host name: byte 0x0a at offset 1 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode) -> Some(GeneralFailure)"]),
            (b"\x05\x01\x00\x03\x03a b\x00\x50", expect!["bad destination host name: byte 0x20 at offset 1 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode) -> Some(GeneralFailure)"]),
            (b"\x05\x01\x00\x03\x04\xc3\xa9.x\x00\x50", expect!["bad destination host name: byte 0xc3 at offset 0 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode) -> Some(GeneralFailure)"]),
            (b"\x05\x01\x00\x03\x02a.\x00\x50\x00", expect![[r#"ok: Request { command: Connect, target: Target { host: Domain(DomainName("a.")), port: 80 } }"#]]),
            (b"\x05\x01\x00\x03\x03..a\x00\x50", expect!["bad destination host name: the host name has an empty label (two dots in a row, or a leading dot) -> Some(GeneralFailure)"]),
        ];
        for (input, want) in cases {
            let got = match parse_request(input) {
                Ok((request, _)) => format!("ok: {request:?}"),
                Err(e) => format!("{e} -> {:?}", e.socks_reply_code()),
            };
            want.assert_eq(&got);
        }
    }

    #[test]
    fn replies_encode_to_known_bytes_for_every_code() {
        let bound = target("192.0.2.7:1080");
        let mut lines = Vec::new();
        for code in ReplyCode::ALL {
            let reply = Reply {
                code,
                bound: bound.clone(),
            };
            let bytes = reply.encode();
            assert_eq!(ReplyCode::from_code(code.code()), Some(code));
            assert_eq!(check_complete(parse_reply, &bytes), reply);
            lines.push(format!("{:02x?} {code}", bytes));
        }
        expect![[r#"
            [05, 00, 00, 01, c0, 00, 02, 07, 04, 38] succeeded
            [05, 01, 00, 01, c0, 00, 02, 07, 04, 38] general SOCKS server failure
            [05, 02, 00, 01, c0, 00, 02, 07, 04, 38] connection not allowed by ruleset
            [05, 03, 00, 01, c0, 00, 02, 07, 04, 38] network unreachable
            [05, 04, 00, 01, c0, 00, 02, 07, 04, 38] host unreachable
            [05, 05, 00, 01, c0, 00, 02, 07, 04, 38] connection refused
            [05, 06, 00, 01, c0, 00, 02, 07, 04, 38] TTL expired
            [05, 07, 00, 01, c0, 00, 02, 07, 04, 38] command not supported
            [05, 08, 00, 01, c0, 00, 02, 07, 04, 38] address type not supported
        "#]]
        .assert_eq(&(lines.join("\n") + "\n"));
        assert_eq!(ReplyCode::from_code(9), None);
        assert_eq!(
            Reply::failure(ReplyCode::CommandNotSupported).encode(),
            [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Reply::success(target("[::1]:443")).encode(),
            [5, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0xbb]
        );
        assert_eq!(
            Reply::success(target("ab:1")).encode(),
            [5, 0, 0, 3, 2, b'a', b'b', 0, 1]
        );
        check(
            parse_reply,
            b"\x05\x09\x00\x01",
            expect!["error: SOCKS5 reply code 0x09 does not exist"],
        );
    }

    #[test]
    fn a_whole_session_parses_message_by_message() {
        let session =
            b"\x05\x02\x00\x02\x01\x05alice\x06s3cret\x05\x01\x00\x03\x0bexample.com\x01\xbb";
        let (greeting, used) = parse_greeting(session).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            choose_method(&greeting, AuthPolicy::PasswordRequired),
            Method::USERNAME_PASSWORD
        );
        let rest = &session[used..];
        let (credentials, used) = parse_auth(rest).unwrap_or_else(|e| panic!("{e}"));
        assert!(credentials.matches("alice", "s3cret"));
        let (request, used) = parse_request(&rest[used..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(used, rest.len() - 14);
        assert_eq!(
            request,
            Request {
                command: Command::Connect,
                target: target("example.com:443")
            }
        );
        assert!(request.command.is_supported());
        assert!(!Command::Bind.is_supported() && !Command::UdpAssociate.is_supported());
    }
}
