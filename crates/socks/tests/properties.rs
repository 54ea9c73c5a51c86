//! Properties of every parser over generated input: arbitrary bytes never
//! panic, whatever parses re-encodes to the same value, and a valid
//! message fed in pieces is `Incomplete` until its last byte and then
//! parses exactly as it would whole.

use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use tollway_socks::{BodyLength, 
    detect_protocol, limits, parse_auth, parse_greeting, parse_http_request, parse_reply,
    parse_request, Command, ConnectRequest, Credentials, DomainName, ForwardRequest, Greeting,
    Host, HttpRequest, Method, ParseError, Protocol, Reply, ReplyCode, Request, Target,
};

type Parser<T> = fn(&[u8]) -> Result<(T, usize), ParseError>;

fn domain() -> impl Strategy<Value = DomainName> {
    "[a-zA-Z0-9_-]{1,63}(\\.[a-zA-Z0-9_-]{1,63}){0,4}\\.?"
        .prop_filter_map("not a valid name", |s| DomainName::new(&s).ok())
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| Host::from(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| Host::from(Ipv6Addr::from(b))),
        domain().prop_map(Host::Domain),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    (host(), any::<u16>()).prop_map(|(host, port)| Target { host, port })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Connect),
        Just(Command::Bind),
        Just(Command::UdpAssociate)
    ]
}

/// HTTP Basic cannot carry ':' in a user name (RFC 7617).
fn credentials(colon_in_username: bool) -> impl Strategy<Value = Credentials> {
    let username = if colon_in_username {
        "\\PC{0,60}"
    } else {
        "[^:]{0,60}"
    };
    (username, "\\PC{0,60}").prop_filter_map("too long", |(u, p)| Credentials::new(u, p).ok())
}

/// A request in absolute form as the parser returns it: end-to-end header
/// lines only (`X-` names, which no rule drops).
fn forward_request() -> impl Strategy<Value = ForwardRequest> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"]),
        target(),
        prop::bool::ANY,
        "/[A-Za-z0-9/?=&%._~:@!$'()*+,;-]{0,40}",
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]),
        prop::collection::vec(("[A-Za-z0-9-]{1,12}", "[ -~]{0,30}"), 0..5),
        prop::option::of(credentials(false)),
        prop_oneof![Just(BodyLength::Empty), any::<u64>().prop_map(BodyLength::Bytes), Just(BodyLength::Chunked)],
        prop::option::of("[a-z]{1,10}(/[0-9]{1,2})?(, h2c)?"),
        prop::bool::ANY,
    )
        .prop_map(|(method, target, default_port, path, version, headers, credentials, body, upgrade, keep_alive)| {
            let mut target = target;
            let authority = if default_port {
                target.port = 80;
                match &target.host {
                    Host::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
                    host => host.to_string(),
                }
            } else {
                target.to_string()
            };
            let mut headers: Vec<Vec<u8>> =
                headers.into_iter().map(|(name, value)| format!("X-{name}: {}", value.trim()).into_bytes()).collect();
            match body {
                BodyLength::Empty => {}
                BodyLength::Bytes(n) => headers.push(format!("Content-Length: {n}").into_bytes()),
                BodyLength::Chunked => headers.push(b"Transfer-Encoding: chunked".to_vec()),
            }
            // HTTP/1.0 has no Upgrade (RFC 9110 §7.8).
            let upgrade = upgrade.filter(|_| version == "HTTP/1.1").map(String::into_bytes);
            ForwardRequest {
                method: method.to_string(),
                authority,
                target,
                path,
                version,
                headers,
                body,
                upgrade,
                keep_alive,
                credentials,
            }
        })
}

fn http_request() -> impl Strategy<Value = HttpRequest> {
    prop_oneof![
        (target(), prop::option::of(credentials(false)))
            .prop_map(|(target, credentials)| HttpRequest::Connect(ConnectRequest { target, credentials })),
        forward_request().prop_map(HttpRequest::Forward),
    ]
}

/// Feeds `bytes` to `parse` in the pieces `cuts` makes (a driver's reads,
/// each appended to its buffer): `Incomplete` before the last byte, then
/// the same as parsing the whole at once.
fn check_pieces<T: PartialEq + std::fmt::Debug>(
    parse: Parser<T>,
    bytes: &[u8],
    cuts: &[prop::sample::Index],
) {
    let whole = parse(bytes);
    assert!(
        matches!(whole, Ok((_, used)) if used == bytes.len()),
        "{whole:?}"
    );
    let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len())).collect();
    ends.sort_unstable();
    for end in ends {
        assert_eq!(
            parse(&bytes[..end]).err(),
            Some(ParseError::Incomplete),
            "cut at {end}"
        );
    }
    assert_eq!(parse(bytes), whole);
}

/// What every parser promises on any input: no panic, `used` within the
/// input, and an accepted value that encodes to bytes parsing back to it.
fn check_any<T: PartialEq + std::fmt::Debug>(
    parse: Parser<T>,
    encode: fn(&T) -> Vec<u8>,
    bytes: &[u8],
) {
    match parse(bytes) {
        Ok((value, used)) => {
            assert!(used <= bytes.len());
            assert_eq!(parse(&bytes[..used]).as_ref().map(|(_, u)| *u), Ok(used));
            let again = encode(&value);
            assert_eq!(parse(&again), Ok((value, again.len())));
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(first in prop_oneof![Just(5u8), Just(1u8), Just(b'C'), any::<u8>()], mut bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        // Most inputs start as a real message would, or nearly all would
        // stop at the first byte.
        if let Some(b) = bytes.first_mut() {
            *b = first;
        }
        let _ = detect_protocol(&bytes);
        check_any(parse_greeting, Greeting::encode, &bytes);
        check_any(parse_auth, Credentials::encode_socks5, &bytes);
        check_any(parse_request, Request::encode, &bytes);
        check_any(parse_reply, Reply::encode, &bytes);
        check_any(parse_http_request, HttpRequest::encode, &bytes);
        if let Ok(s) = std::str::from_utf8(&bytes) {
            if let Ok(t) = s.parse::<Target>() {
                prop_assert_eq!(t.to_string().parse::<Target>(), Ok(t));
            }
        }
    }

    /// Near-valid HTTP: a real head with a few bytes overwritten.
    #[test]
    fn mutated_http_heads_never_panic(
        request in http_request(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = request.encode();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        check_any(parse_http_request, HttpRequest::encode, &bytes);
    }

    #[test]
    fn requests_parse_the_same_in_any_pieces(command in command(), target in target(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let request = Request { command, target };
        let bytes = request.encode();
        prop_assert!(bytes.len() <= limits::MAX_REQUEST_BYTES);
        prop_assert_eq!(parse_request(&bytes), Ok((request, bytes.len())));
        check_pieces(parse_request, &bytes, &cuts);
    }

    #[test]
    fn replies_parse_the_same_in_any_pieces(code in prop::sample::select(ReplyCode::ALL.to_vec()), bound in target(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let reply = Reply { code, bound };
        let bytes = reply.encode();
        prop_assert_eq!(parse_reply(&bytes), Ok((reply, bytes.len())));
        check_pieces(parse_reply, &bytes, &cuts);
    }

    #[test]
    fn greetings_and_auth_parse_the_same_in_any_pieces(
        methods in prop::collection::vec(any::<u8>(), 1..=255),
        credentials in credentials(true),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let greeting = Greeting { methods: methods.into_iter().map(Method).collect() };
        let bytes = greeting.encode();
        prop_assert_eq!(parse_greeting(&bytes), Ok((greeting, bytes.len())));
        check_pieces(parse_greeting, &bytes, &cuts);
        let bytes = credentials.encode_socks5();
        prop_assert!(bytes.len() <= limits::MAX_AUTH_BYTES);
        prop_assert_eq!(parse_auth(&bytes), Ok((credentials, bytes.len())));
        check_pieces(parse_auth, &bytes, &cuts);
    }

    #[test]
    fn http_heads_parse_the_same_in_any_pieces(
        request in http_request(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let bytes = request.encode();
        prop_assert_eq!(detect_protocol(&bytes), Ok(Protocol::Http));
        prop_assert_eq!(parse_http_request(&bytes), Ok((request, bytes.len())));
        check_pieces(parse_http_request, &bytes, &cuts);
    }

    /// What the origin server gets is an origin-form request for the same
    /// method, path and version, with the URL's authority as its Host and
    /// every end-to-end header, ending the connection after its response.
    #[test]
    fn forwarded_requests_reach_the_origin_in_origin_form(request in forward_request()) {
        let head = String::from_utf8(request.origin_head(false)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut lines = head.split("\r\n");
        let (start, host) = (format!("{} {} {}", request.method, request.path, request.version), format!("Host: {}", request.authority));
        prop_assert_eq!(lines.next(), Some(start.as_str()));
        prop_assert_eq!(lines.next(), Some(host.as_str()));
        for line in &request.headers {
            prop_assert_eq!(lines.next().map(str::as_bytes), Some(line.as_slice()));
        }
        let upgrade = request.upgrade.as_ref().map(|p| format!("Upgrade: {}", String::from_utf8_lossy(p)));
        let last = match &upgrade {
            Some(line) => vec![line.as_str(), "Connection: Upgrade", "", ""],
            None => vec!["Connection: close", "", ""],
        };
        prop_assert_eq!(lines.collect::<Vec<_>>(), last);
    }

    #[test]
    fn targets_display_and_parse_back(target in target()) {
        let text = target.to_string();
        prop_assert_eq!(text.parse::<Target>(), Ok(target.clone()));
        prop_assert_eq!(text.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).parse::<Host>()), Some(Ok(target.host)));
    }
}

/// A whole SOCKS5 session arriving one byte at a time, the way a slow
/// client's reads would: each message is `Incomplete` until its last byte.
#[test]
fn a_session_fed_byte_by_byte() {
    let session = b"\x05\x02\x00\x02\x01\x05alice\x06s3cret\x05\x01\x00\x03\x0bexample.com\x01\xbb";
    let mut buffer: Vec<u8> = Vec::new();
    let mut phase = 0;
    let mut completed = Vec::new();
    for &byte in session {
        buffer.push(byte);
        if phase == 0 {
            assert_eq!(detect_protocol(&buffer), Ok(Protocol::Socks5));
        }
        let result = match phase {
            0 => parse_greeting(&buffer).map(|(_, used)| used),
            1 => parse_auth(&buffer).map(|(_, used)| used),
            _ => parse_request(&buffer).map(|(_, used)| used),
        };
        match result {
            Ok(used) => {
                completed.push(used);
                buffer.drain(..used);
                phase += 1;
            }
            Err(e) => assert_eq!(e, ParseError::Incomplete),
        }
    }
    assert_eq!(completed, [4, 14, 18]);
    assert!(buffer.is_empty());
}
