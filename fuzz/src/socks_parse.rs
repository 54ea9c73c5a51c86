//! The `socks_parse` target: untrusted bytes from a local client into the
//! front end's parsers (crates/socks): protocol detection, the SOCKS5
//! greeting, username/password and request, the SOCKS5 reply, and the HTTP
//! proxy head (CONNECT, or a request to forward); and what comes back to
//! a forwarded request, an origin's response head and body.

use crate::hex;
use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr};
use tollway_socks::{
    detect_protocol, limits, parse_auth, parse_greeting, parse_http_request, parse_reply,
    parse_request, parse_response, AuthPolicy, BodyEnd, BodyLength, Command, ConnectRequest, Credentials, DomainName, Greeting, Host,
    HttpRequest, Method, ParseError, Protocol, Reply, ReplyCode, Request, ResponseBody, ResponseHead, Target,
};

type Parser<T> = fn(&[u8]) -> Result<(T, usize), ParseError>;

/// How faithfully a parsed value re-encodes.
#[derive(Clone, Copy, PartialEq)]
enum Reencode {
    /// To exactly the bytes it was parsed from.
    Exact,
    /// Exactly, unless the parser normalised the value: an IP address sent
    /// in SOCKS5's domain-name field comes back as an address.
    ExactUnlessNormalised,
    /// To bytes that parse to the same value (HTTP: header case, spacing
    /// and other headers are not kept).
    SameValue,
}

/// The parsers' contract on one untrusted input. Panics (a finding for
/// the fuzzer) if a parser panics, or if:
///
/// * the detector's answer disagrees with the first byte;
/// * a parser says `Incomplete` for a buffer at or over its limit (the
///   driver would buffer without bound);
/// * a parser accepts a message but not the same message without the
///   bytes after it, or accepts it one byte short of where it ended;
/// * an accepted value re-encodes to bytes that do not parse back to it
///   (or, where the wire form is canonical, to other bytes).
///
/// Every parser sees the whole input; the SOCKS5 parsers also see it the
/// way a session would deliver it, message after message.
pub fn check_socks_parse(data: &[u8]) {
    check_detect(data);
    check_parser(
        "greeting",
        data,
        parse_greeting,
        Greeting::encode,
        limits::MAX_GREETING_BYTES,
        Reencode::Exact,
    );
    check_parser(
        "auth",
        data,
        parse_auth,
        Credentials::encode_socks5,
        limits::MAX_AUTH_BYTES,
        Reencode::Exact,
    );
    check_request(data);
    check_parser(
        "reply",
        data,
        parse_reply,
        Reply::encode,
        limits::MAX_REQUEST_BYTES,
        Reencode::ExactUnlessNormalised,
    );
    check_parser(
        "http",
        data,
        parse_http_request,
        HttpRequest::encode,
        limits::MAX_HTTP_HEAD_BYTES,
        Reencode::SameValue,
    );
    if let Ok((greeting, used)) = parse_greeting(data) {
        let _ = tollway_socks::choose_method(&greeting, AuthPolicy::Open);
        let _ = tollway_socks::choose_method(&greeting, AuthPolicy::PasswordRequired);
        let rest = &data[used..];
        match rest.first() {
            Some(1) => {
                if let Some(used) = check_parser(
                    "auth",
                    rest,
                    parse_auth,
                    Credentials::encode_socks5,
                    limits::MAX_AUTH_BYTES,
                    Reencode::Exact,
                ) {
                    check_request(&rest[used..]);
                }
            }
            _ => {
                check_request(rest);
            }
        }
    }
    // A forwarded request's body, delimited as the front end does; and any
    // bytes as a chunked body, which the fuzzer reaches more easily.
    if let Ok((HttpRequest::Forward(f), used)) = parse_http_request(data) {
        check_body_end(f.body, &data[used..]);
    }
    check_body_end(BodyLength::Chunked, data);
    check_response(data);
    // The tunnel protocol and the CLI read targets as text.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(target) = text.parse::<Target>() {
            let shown = target.to_string();
            assert_eq!(
                shown.parse::<Target>().as_ref(),
                Ok(&target),
                "{text:?} displayed as {shown:?}"
            );
        }
    }
}

/// An origin's response (the exit passes on whatever the origin sends):
/// its head parsed as for a GET and as for a HEAD, with the parsers'
/// usual contract, and its body delimited as the front end does.
fn check_response(data: &[u8]) {
    // The re-encoding carries the proxy's `Connection`, not the origin's:
    // the usual contract is checked with the origin's persistence set
    // aside, and the persistence the re-encoding says is checked apart.
    let as_get: Parser<ResponseHead> = |b| parse_response(b, "GET").map(|(h, u)| (persistence_aside(h), u));
    let as_head: Parser<ResponseHead> = |b| parse_response(b, "HEAD").map(|(h, u)| (persistence_aside(h), u));
    if let Ok((head, _)) = parse_response(data, "GET") {
        for keep in [true, false] {
            if let Ok((again, _)) = parse_response(&head.encode(keep), "GET") {
                assert_eq!(again.persistent, keep, "response: encoded with keep-alive {keep}: {head:?}");
            }
        }
    }
    for parse in [as_get, as_head] {
        let used = check_parser(
            "response",
            data,
            parse,
            |head| head.encode(true),
            limits::MAX_HTTP_RESPONSE_HEAD_BYTES,
            Reencode::SameValue,
        );
        if let (Some(used), Ok((head, _))) = (used, parse(data)) {
            if let ResponseBody::Framed(length) = head.body {
                check_body_end(length, &data[used..]);
            }
        }
    }
}

fn persistence_aside(mut head: ResponseHead) -> ResponseHead {
    head.persistent = true;
    head
}

/// Where a body ends does not depend on how its bytes arrive: split in
/// two (at the middle, and where the first byte says), the pieces end it
/// at the same byte, or fail alike; and past its end nothing is taken.
fn check_body_end(length: BodyLength, data: &[u8]) {
    let mut whole = BodyEnd::new(length);
    let taken = whole.take(data);
    if let Ok(n) = taken {
        assert!(n <= data.len());
        assert!(whole.is_done() || n == data.len(), "stopped at {n} of {} before the end", data.len());
    }
    let cuts = [data.len() / 2, data.first().map_or(0, |&b| b as usize % (data.len() + 1))];
    for cut in cuts {
        let mut pieces = BodyEnd::new(length);
        let split = pieces.take(&data[..cut]).and_then(|first| {
            if first < cut {
                assert!(pieces.is_done(), "stopped at {first} of the first {cut} bytes before the end");
                return Ok(first);
            }
            Ok(first + pieces.take(&data[cut..])?)
        });
        assert_eq!(split.is_ok(), taken.is_ok(), "split at {cut}: {split:?} against {taken:?}");
        if let (Ok(a), Ok(b)) = (split, taken) {
            assert_eq!((a, pieces.is_done()), (b, whole.is_done()), "split at {cut}");
        }
    }
    if whole.is_done() {
        assert_eq!(whole.take(data), Ok(0), "a finished body took more");
    }
}

fn check_detect(data: &[u8]) {
    match (detect_protocol(data), data.first()) {
        (Ok(Protocol::Socks5), Some(&first)) => assert_eq!(first, 5),
        (Ok(Protocol::Http), Some(first)) => assert!(first.is_ascii_alphabetic()),
        (Err(ParseError::Incomplete), None) => {}
        (Err(e), Some(_)) => assert!(!e.is_incomplete() && !e.to_string().is_empty()),
        (got, first) => panic!("detect_protocol gave {got:?} for first byte {first:?}"),
    }
}

fn check_request(data: &[u8]) {
    check_parser(
        "request",
        data,
        parse_request,
        Request::encode,
        limits::MAX_REQUEST_BYTES,
        Reencode::ExactUnlessNormalised,
    );
}

fn check_parser<T: PartialEq + Debug>(
    what: &str,
    data: &[u8],
    parse: Parser<T>,
    encode: fn(&T) -> Vec<u8>,
    limit: usize,
    reencode: Reencode,
) -> Option<usize> {
    match &parse(data) {
        Err(ParseError::Incomplete) => {
            assert!(
                data.len() < limit,
                "{what}: Incomplete at {} bytes; the limit is {limit}",
                data.len()
            );
        }
        Err(e) => {
            // The driver's answers must exist for every refusal.
            let _ = (
                e.to_string(),
                e.socks_reply_code(),
                e.http_reply().map(|r| r.as_bytes()),
            );
        }
        Ok((value, used)) => {
            let used = *used;
            assert!(
                0 < used && used <= data.len() && used <= limit,
                "{what}: used {used} of {}",
                data.len()
            );
            let message = &data[..used];
            let alone = parse(message);
            assert!(
                matches!(&alone, Ok((v, u)) if v == value && *u == used),
                "{what}: accepted {} with bytes after it, but alone it parses as {alone:?}",
                hex(message)
            );
            assert_eq!(
                parse(&message[..used - 1]).err(),
                Some(ParseError::Incomplete),
                "{what}: accepted {} but one byte short is not Incomplete",
                hex(message)
            );
            let again = encode(value);
            let reparsed = parse(&again);
            // An HTTP head's encoding adds the Host line a client may leave
            // out, so one accepted near the limit may encode past it.
            let over = again.len() > limit
                && matches!(reparsed, Err(ParseError::HeadTooLarge | ParseError::ResponseHeadTooLarge));
            assert!(
                over || matches!(&reparsed, Ok((v, u)) if v == value && *u == again.len()),
                "{what}: {value:?} re-encoded as {} parses as {reparsed:?}",
                hex(&again)
            );
            let normalised = reencode == Reencode::ExactUnlessNormalised
                && domain_field_held_an_address(message);
            if reencode == Reencode::Exact
                || (reencode == Reencode::ExactUnlessNormalised && !normalised)
            {
                assert!(
                    again == message,
                    "{what}: not re-encoded exactly\n input      {}\n re-encoded {}",
                    hex(message),
                    hex(&again)
                );
            }
            return Some(used);
        }
    }
    None
}

/// Whether a SOCKS5 request or reply carried an address in its domain-name
/// field (ATYP 3 at offset 3), which the parser turns into an address.
fn domain_field_held_an_address(message: &[u8]) -> bool {
    message.get(3) == Some(&3)
}

/// A named seed input; `valid` says whether it is a whole, valid session
/// (SOCKS5 messages or an HTTP head) with nothing after it.
pub struct SocksSeed {
    pub name: String,
    pub bytes: Vec<u8>,
    pub valid: bool,
}

/// Whether `data` is exactly a valid session: an HTTP proxy head, or a
/// SOCKS5 greeting, optional username/password and request.
pub fn is_valid_session(data: &[u8]) -> bool {
    let used = match detect_protocol(data) {
        Ok(Protocol::Http) => parse_http_request(data).map(|(_, used)| used),
        Ok(Protocol::Socks5) => parse_greeting(data).and_then(|(_, greeting)| {
            let rest = &data[greeting..];
            let auth = match rest.first() {
                Some(1) => parse_auth(rest)?.1,
                _ => 0,
            };
            Ok(greeting + auth + parse_request(&rest[auth..])?.1)
        }),
        Err(e) => Err(e),
    };
    used == Ok(data.len())
}

/// Seeds built with the crate's own encoders, so they follow any change in
/// the wire format: every message in ordinary and extreme forms, each
/// limit from both sides, and the refusals the driver must answer.
pub fn seed_socks_parse() -> Vec<SocksSeed> {
    let name = |s: &str| Host::Domain(DomainName::new(s).unwrap_or_else(|e| panic!("{s}: {e}")));
    let v4 = Host::from(Ipv4Addr::new(192, 0, 2, 1));
    let v6 = Host::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let longest_name = {
        let label = "a".repeat(limits::MAX_DOMAIN_LABEL_BYTES);
        let joined = [label.as_str(); 4].join(".");
        name(&joined[..limits::MAX_DOMAIN_BYTES])
    };
    let request = |command, host: &Host, port| {
        Request {
            command,
            target: Target::new(host.clone(), port),
        }
        .encode()
    };
    let greeting = |methods: &[Method]| {
        Greeting {
            methods: methods.to_vec(),
        }
        .encode()
    };
    let credentials =
        |user: &str, pass: &str| Credentials::new(user, pass).unwrap_or_else(|e| panic!("{e}"));
    let alice = credentials("alice", "s3cret");
    let longest_user = "u".repeat(limits::MAX_USERNAME_BYTES);
    let longest_pass = "p".repeat(limits::MAX_PASSWORD_BYTES);
    let session = |parts: &[&[u8]]| parts.concat();
    let no_auth = greeting(&[Method::NO_AUTH]);
    let both = greeting(&[Method::NO_AUTH, Method::USERNAME_PASSWORD]);
    let connect = |host: &Host, port, credentials: Option<Credentials>| {
        ConnectRequest {
            target: Target::new(host.clone(), port),
            credentials,
        }
        .encode()
    };
    let http = |head: &str| head.as_bytes().to_vec();
    let padded = |start: &str, len: usize| {
        let end = "\r\n\r\n";
        format!("{start}{}{end}", "p".repeat(len - start.len() - end.len())).into_bytes()
    };
    let padded_head = |len: usize| padded("CONNECT example.com:443 HTTP/1.1\r\nX-Pad: ", len);
    let all_methods: Vec<Method> = (0..=254).map(Method).collect();

    let seeds: Vec<(&str, Vec<u8>, bool)> = vec![
        // SOCKS5 sessions.
        (
            "socks-connect-v4",
            session(&[&no_auth, &request(Command::Connect, &v4, 443)]),
            true,
        ),
        (
            "socks-connect-v6",
            session(&[&no_auth, &request(Command::Connect, &v6, 80)]),
            true,
        ),
        (
            "socks-connect-domain",
            session(&[&both, &request(Command::Connect, &name("example.com"), 443)]),
            true,
        ),
        (
            "socks-auth-connect",
            session(&[&both, &alice.encode_socks5(), &request(Command::Connect, &name("example.com."), 8080)]),
            true,
        ),
        (
            "socks-auth-longest",
            session(&[
                &greeting(&all_methods),
                &credentials(&longest_user, &longest_pass).encode_socks5(),
                &request(Command::Connect, &longest_name, u16::MAX),
            ]),
            true,
        ),
        (
            "socks-auth-empty",
            session(&[&both, &credentials("", "").encode_socks5(), &request(Command::Connect, &v4, 0)]),
            true,
        ),
        (
            "socks-auth-utf8",
            session(&[&both, &credentials("ünïcödé", "pässwörd").encode_socks5(), &request(Command::Connect, &v4, 1)]),
            true,
        ),
        (
            "socks-bind",
            session(&[&no_auth, &request(Command::Bind, &v4, 0)]),
            true,
        ),
        (
            "socks-udp-associate",
            session(&[&no_auth, &request(Command::UdpAssociate, &v6, 5353)]),
            true,
        ),
        (
            "socks-domain-ip-literal",
            session(&[&no_auth, b"\x05\x01\x00\x03\x0810.0.0.1\x00\x50"]),
            true,
        ),
        ("socks-domain-v6-literal", session(&[&no_auth, b"\x05\x01\x00\x03\x05[::1]\x01\xbb"]), true),
        // SOCKS5 refusals.
        ("socks4", b"\x04\x01\x00\x50\xc0\x00\x02\x01user\x00".to_vec(), false),
        ("socks-no-methods", b"\x05\x00".to_vec(), false),
        ("socks-bad-auth-version", session(&[&both, b"\x05\x01u\x01p"]), false),
        ("socks-auth-not-utf8", session(&[&both, b"\x01\x02\xff\xfe\x01p"]), false),
        ("socks-unknown-command", session(&[&no_auth, b"\x05\x04\x00\x01\x7f\x00\x00\x01\x00\x50"]), false),
        ("socks-reserved-set", session(&[&no_auth, b"\x05\x01\x01\x01\x7f\x00\x00\x01\x00\x50"]), false),
        ("socks-bad-atyp", session(&[&no_auth, b"\x05\x01\x00\x02\x7f\x00\x00\x01\x00\x50"]), false),
        ("socks-empty-domain", session(&[&no_auth, b"\x05\x01\x00\x03\x00\x00\x50"]), false),
        ("socks-domain-nul", session(&[&no_auth, b"\x05\x01\x00\x03\x03a\x00b\x00\x50"]), false),
        ("socks-domain-empty-label", session(&[&no_auth, b"\x05\x01\x00\x03\x04a..b\x00\x50"]), false),
        ("socks-truncated", request(Command::Connect, &name("example.com"), 443)[..9].to_vec(), false),
        // Replies, which the reply parser reads (the client side).
        (
            "socks-reply-success",
            Reply::success(Target::new(v4.clone(), 1080)).encode(),
            false,
        ),
        (
            "socks-reply-refused-domain",
            Reply { code: ReplyCode::ConnectionRefused, bound: Target::new(name("proxy.example"), 1) }.encode(),
            false,
        ),
        // HTTP: CONNECT, and requests to forward.
        ("http-connect", connect(&name("example.com"), 443, None), true),
        ("http-connect-v6", connect(&v6, 443, None), true),
        ("http-connect-v4-auth", connect(&v4, 8443, Some(alice.clone())), true),
        (
            "http-connect-longest",
            connect(&longest_name, u16::MAX, Some(credentials(&longest_user, &longest_pass))),
            true,
        ),
        (
            "http-curl",
            http(
                "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/8.5.0\r\n\
                 Proxy-Authorization: basic YWxpY2U6czNjcmV0\r\nProxy-Connection: Keep-Alive\r\n\r\n",
            ),
            true,
        ),
        ("http-bare-lf", http("CONNECT a:1 HTTP/1.0\nproxy-authorization:Basic dTpw\n\n"), true),
        ("http-at-limit", padded_head(limits::MAX_HTTP_HEAD_BYTES), true),
        ("http-over-limit", padded_head(limits::MAX_HTTP_HEAD_BYTES + 1), false),
        // No Host line: its encoding adds one and passes the limit (the
        // fuzzer's first finding, in the check).
        (
            "http-forward-at-limit",
            padded("POST http://a/ HTTP/1.0\r\nX-Pad: ", limits::MAX_HTTP_HEAD_BYTES),
            true,
        ),
        ("http-get", http("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"), true),
        (
            "http-forward-hop-by-hop",
            http(
                "POST http://[2001:db8::1]:8080/a?b=c#d HTTP/1.0\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
                 Content-Length: 3\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
            ),
            true,
        ),
        // A head, its chunked body and a pipelined request: more than a
        // head, so not exactly a session.
        (
            "http-forward-chunked-pipelined",
            http(
                "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nwiki\r\n0\r\nT: 1\r\n\r\n\
                 GET http://a/2 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
            ),
            false,
        ),
        (
            "http-forward-upgrade",
            http("GET http://a/chat HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n"),
            true,
        ),
        ("http-forward-conflicting-lengths", http("PUT http://a/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), false),
        ("http-origin-form", http("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), false),
        ("http-https-url", http("GET https://example.com/ HTTP/1.1\r\n\r\n"), false),
        ("http-no-port", http("CONNECT example.com HTTP/1.1\r\n\r\n"), false),
        ("http-v6-unbracketed", http("CONNECT ::1:443 HTTP/1.1\r\n\r\n"), false),
        // Another scheme than Basic reads as no credentials.
        ("http-bearer", http("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Bearer x\r\n\r\n"), true),
        ("http-bad-base64", http("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic dTp=w\r\n\r\n"), false),
        ("http-folded-header", http("CONNECT a:1 HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), false),
        ("http-version-2", http("CONNECT a:1 HTTP/2.0\r\n\r\n"), false),
        // Origins' responses to forwarded requests.
        (
            "http-response-chunked",
            http("HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            false,
        ),
        (
            "http-response-continue",
            http("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\nok"),
            false,
        ),
        // What else arrives on a proxy port: a TLS ClientHello's start.
        ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), false),
    ];
    seeds
        .into_iter()
        .map(|(name, bytes, valid)| SocksSeed {
            name: name.to_string(),
            bytes,
            valid,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_labelled_right_and_pass_the_check() {
        let seeds = seed_socks_parse();
        for seed in &seeds {
            assert_eq!(is_valid_session(&seed.bytes), seed.valid, "{}", seed.name);
            assert!(
                seed.bytes.len() <= 9000,
                "{}: over run.sh's -max_len",
                seed.name
            );
            check_socks_parse(&seed.bytes);
        }
        crate::assert_unique_names(seeds.iter().map(|s| s.name.as_str()));
    }

    #[test]
    fn check_accepts_what_the_parsers_refuse() {
        for input in [
            &b""[..],
            b"\x05",
            b"\x05\x01",
            b"\x01",
            b"C",
            b"CONNECT",
            b"\xff",
            b"\x05\x01\x00\x05\x01\x00\x03",
        ] {
            check_socks_parse(input);
        }
    }
}
