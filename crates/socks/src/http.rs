//! HTTP CONNECT (RFC 9110 §9.3.6; message syntax RFC 9112): the request
//! head a client sends to open a tunnel through an HTTP proxy, and the
//! replies a proxy sends back.
//!
//! ```text
//! CONNECT example.com:443 HTTP/1.1\r\n
//! Host: example.com:443\r\n
//! Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n
//! \r\n
//! ```

use crate::base64;
use crate::credentials::Credentials;
use crate::error::{AddrError, DomainError, ParseError};
use crate::limits::MAX_HTTP_HEAD_BYTES;
use crate::target::Target;

/// A parsed CONNECT request head. Other headers are checked for syntax
/// and dropped: a tunnel needs none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The authority-form request target, `host:port`.
    pub target: Target,
    /// From `Proxy-Authorization: Basic ...`, if the client sent it.
    pub credentials: Option<Credentials>,
}

impl ConnectRequest {
    /// The request head's bytes (the client's side, for tests and
    /// chaining through another proxy).
    pub fn encode(&self) -> Vec<u8> {
        let target = &self.target;
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(credentials) = &self.credentials {
            head.push_str("Proxy-Authorization: ");
            head.push_str(&credentials.basic_header_value());
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

impl Credentials {
    /// `Basic <base64(username:password)>` (RFC 7617). A username holding
    /// ':' cannot be told apart from the password in this form; the
    /// parser splits at the first ':', as the RFC says.
    pub fn basic_header_value(&self) -> String {
        let pair = format!("{}:{}", self.username(), self.password());
        format!("Basic {}", base64::encode(pair.as_bytes()))
    }
}

/// Parses a CONNECT request head: `Ok((request, bytes used))`, the bytes
/// used ending with the empty line, so anything after them is the
/// client's first tunnel bytes.
///
/// Lines end in CRLF, or a bare LF (RFC 9112 §2.2 lets a recipient accept
/// one). Each line is checked as soon as it is complete, so a wrong method
/// or a bad header is refused without waiting for the rest. A head longer
/// than [`MAX_HTTP_HEAD_BYTES`] is refused ([`ParseError::HeadTooLarge`]),
/// so the driver never buffers more than that.
pub fn parse_http_connect(buf: &[u8]) -> Result<(ConnectRequest, usize), ParseError> {
    let window = &buf[..buf.len().min(MAX_HTTP_HEAD_BYTES)];
    let mut pos = 0;
    let mut line_number = 0;
    let mut target = None;
    let mut credentials = None;
    loop {
        let Some(len) = window[pos..].iter().position(|&b| b == b'\n') else {
            return Err(if buf.len() >= MAX_HTTP_HEAD_BYTES {
                ParseError::HeadTooLarge
            } else {
                ParseError::Incomplete
            });
        };
        let line = &window[pos..pos + len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += len + 1;
        line_number += 1;
        match target {
            None => target = Some(parse_request_line(line)?),
            Some(target) if line.is_empty() => {
                return Ok((
                    ConnectRequest {
                        target,
                        credentials,
                    },
                    pos,
                ))
            }
            Some(_) => parse_header(line, line_number, &mut credentials)?,
        }
    }
}

/// `CONNECT SP host:port SP HTTP/1.1`, single spaces (RFC 9112 §3).
fn parse_request_line(line: &[u8]) -> Result<Target, ParseError> {
    const SHAPE: &str = "expected `CONNECT host:port HTTP/1.1`";
    let (method, rest) = split_once(line, b' ').unwrap_or((line, &[]));
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadRequestLine(SHAPE));
    }
    // Methods are case-sensitive (RFC 9110 §9.1).
    if method != b"CONNECT" {
        // A token is ASCII; keep the message short whatever was sent.
        let shown = &method[..method.len().min(32)];
        return Err(ParseError::MethodNotAllowed(
            String::from_utf8_lossy(shown).into_owned(),
        ));
    }
    let (authority, version) = split_once(rest, b' ').ok_or(ParseError::BadRequestLine(SHAPE))?;
    if authority.is_empty() {
        return Err(ParseError::BadRequestLine(SHAPE));
    }
    let target = ascii(authority)?
        .parse()
        .map_err(ParseError::BadAuthority)?;
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(ParseError::UnsupportedHttpVersion);
    }
    Ok(target)
}

fn ascii(authority: &[u8]) -> Result<&str, ParseError> {
    let bad = |at: usize| {
        let byte = authority.get(at).copied().unwrap_or(0);
        ParseError::BadAuthority(AddrError::Domain(DomainError::BadByte { byte, at }))
    };
    if let Some(at) = authority.iter().position(|b| !b.is_ascii()) {
        return Err(bad(at));
    }
    core::str::from_utf8(authority).map_err(|e| bad(e.valid_up_to()))
}

/// `name: value` (RFC 9110 §5, RFC 9112 §5). Only Proxy-Authorization is
/// kept; its name, like every field name, is case-insensitive.
fn parse_header(
    line: &[u8],
    line_number: usize,
    credentials: &mut Option<Credentials>,
) -> Result<(), ParseError> {
    let bad = |reason| ParseError::BadHeader {
        line: line_number,
        reason,
    };
    if line.starts_with(b" ") || line.starts_with(b"\t") {
        return Err(bad(
            "continuation lines (obsolete line folding) are not accepted",
        ));
    }
    let (name, value) =
        split_once(line, b':').ok_or_else(|| bad("no ':' after the header name"))?;
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad(
            "the header name is not a token (no spaces before the ':')",
        ));
    }
    let value = trim_whitespace(value);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(bad("a control character in the header value"));
    }
    if name.eq_ignore_ascii_case(b"proxy-authorization") {
        if credentials.is_some() {
            return Err(ParseError::DuplicateProxyAuthorization);
        }
        *credentials = Some(parse_basic(value)?);
    }
    Ok(())
}

/// `Basic <token68>` (RFC 7617); the scheme name is case-insensitive.
fn parse_basic(value: &[u8]) -> Result<Credentials, ParseError> {
    if value.is_empty() {
        return Err(ParseError::BadBasicCredentials("the header is empty"));
    }
    let (scheme, token) = split_once(value, b' ').unwrap_or((value, &[]));
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(ParseError::UnsupportedAuthScheme);
    }
    let token = trim_whitespace(token);
    if token.is_empty() {
        return Err(ParseError::BadBasicCredentials("nothing after `Basic`"));
    }
    let decoded =
        base64::decode(token).ok_or(ParseError::BadBasicCredentials("not valid Base64"))?;
    let (username, password) = split_once(&decoded, b':').ok_or(
        ParseError::BadBasicCredentials("no ':' between user name and password"),
    )?;
    Credentials::from_bytes(username, password)
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_whitespace(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn split_once(s: &[u8], delimiter: u8) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&b| b == delimiter)?;
    Some((&s[..at], &s[at + 1..]))
}

/// The proxy's answers to a CONNECT. Complete response heads; every
/// refusal carries `Connection: close` and the driver closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpReply {
    /// 200: the tunnel is open; from the next byte on, the connection
    /// carries the tunnel (RFC 9110 §9.3.6: no Content-Length on a 2xx).
    Established,
    /// 400: a malformed request head.
    BadRequest,
    /// 403: the policy refuses this destination, or the credentials
    /// were wrong after they were asked for.
    Forbidden,
    /// 405: a method other than CONNECT (with `Allow: CONNECT`, RFC 9110
    /// §15.5.6).
    MethodNotAllowed,
    /// 407: credentials are required (`Proxy-Authenticate: Basic`).
    ProxyAuthRequired,
    /// 502: the exit could not reach the target.
    BadGateway,
    /// 504: the exit did not reach the target in time.
    GatewayTimeout,
}

impl HttpReply {
    pub const ALL: [HttpReply; 7] = [
        HttpReply::Established,
        HttpReply::BadRequest,
        HttpReply::Forbidden,
        HttpReply::MethodNotAllowed,
        HttpReply::ProxyAuthRequired,
        HttpReply::BadGateway,
        HttpReply::GatewayTimeout,
    ];

    pub fn status(self) -> u16 {
        match self {
            HttpReply::Established => 200,
            HttpReply::BadRequest => 400,
            HttpReply::Forbidden => 403,
            HttpReply::MethodNotAllowed => 405,
            HttpReply::ProxyAuthRequired => 407,
            HttpReply::BadGateway => 502,
            HttpReply::GatewayTimeout => 504,
        }
    }

    /// The response head to write.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            HttpReply::Established => b"HTTP/1.1 200 Connection Established\r\n\r\n",
            HttpReply::BadRequest => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            HttpReply::Forbidden => b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            HttpReply::MethodNotAllowed => {
                b"HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            HttpReply::ProxyAuthRequired => {
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"tollway\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n"
            }
            HttpReply::BadGateway => b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            HttpReply::GatewayTimeout => {
                b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check(input: &str, want: Expect) {
        let got = match parse_http_connect(input.as_bytes()) {
            Ok((request, used)) => {
                let credentials = match &request.credentials {
                    Some(c) => format!(" user={:?} password={:?}", c.username(), c.password()),
                    None => String::new(),
                };
                format!(
                    "CONNECT {}{credentials} (used {used} of {})",
                    request.target,
                    input.len()
                )
            }
            Err(e) => format!("error: {e} -> {:?}", e.http_reply().map(HttpReply::status)),
        };
        want.assert_eq(&got);
    }

    /// Every strict prefix is `Incomplete`; the whole parses, and again
    /// the same with tunnel bytes after it.
    fn check_complete(input: &[u8]) -> ConnectRequest {
        for cut in 0..input.len() {
            assert_eq!(
                parse_http_connect(&input[..cut]).err(),
                Some(ParseError::Incomplete),
                "{:?} cut at {cut}",
                String::from_utf8_lossy(input)
            );
        }
        let (request, used) = parse_http_connect(input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(used, input.len());
        let mut longer = input.to_vec();
        longer.extend_from_slice(b"\x16\x03\x01 TLS bytes\r\n\r\n");
        assert_eq!(parse_http_connect(&longer), Ok((request.clone(), used)));
        request
    }

    #[test]
    fn connect_requests_parse() {
        check(
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            expect!["CONNECT example.com:443 (used 59 of 59)"],
        );
        check(
            "CONNECT example.com:443 HTTP/1.0\r\n\r\n",
            expect!["CONNECT example.com:443 (used 36 of 36)"],
        );
        check(
            "CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n",
            expect!["CONNECT [2001:db8::1]:443 (used 38 of 38)"],
        );
        check(
            "CONNECT 192.0.2.1:22 HTTP/1.1\r\n\r\n",
            expect!["CONNECT 192.0.2.1:22 (used 33 of 33)"],
        );
        check(
            "CONNECT a:1 HTTP/1.1\n\n",
            expect!["CONNECT a:1 (used 22 of 22)"],
        );
        check(
            "CONNECT a:1 HTTP/1.1\r\nX: 1\n\r\nrest",
            expect!["CONNECT a:1 (used 29 of 33)"],
        );
        check(
            "CONNECT a:1 HTTP/1.1\r\nUser-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
            expect!["CONNECT a:1 (used 99 of 99)"],
        );
        check(
            "CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n",
            expect![[r#"CONNECT a:1 user="alice" password="s3cret" (used 69 of 69)"#]],
        );
    }

    #[test]
    fn header_names_and_the_basic_scheme_are_case_insensitive() {
        for name in [
            "Proxy-Authorization",
            "proxy-authorization",
            "PROXY-AUTHORIZATION",
            "pRoXy-AuThOrIzAtIoN",
        ] {
            for scheme in ["Basic", "basic", "BASIC"] {
                let head = format!(
                    "CONNECT a:1 HTTP/1.1\r\n{name}:  {scheme}   YWxpY2U6czNjcmV0  \r\n\r\n"
                );
                let request = check_complete(head.as_bytes());
                let credentials = request.credentials.unwrap_or_else(|| panic!("{head}"));
                assert!(credentials.matches("alice", "s3cret"), "{head}");
            }
        }
    }

    #[test]
    fn basic_credentials_decode() {
        let cases = [
            // RFC 7617 §2's example.
            ("QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "Aladdin", "open sesame"),
            ("QWxhZGRpbjpvcGVuIHNlc2FtZQ", "Aladdin", "open sesame"),
            ("OnB3", "", "pw"),
            ("dTo=", "u", ""),
            // The password may hold ':'; the user name may not.
            ("dTphOmI=", "u", "a:b"),
            // UTF-8 (RFC 7617 §2.1's example: "test" / "123£").
            ("dGVzdDoxMjPCow==", "test", "123\u{a3}"),
        ];
        for (token, username, password) in cases {
            let head =
                format!("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic {token}\r\n\r\n");
            let (request, _) =
                parse_http_connect(head.as_bytes()).unwrap_or_else(|e| panic!("{token}: {e}"));
            let credentials = request.credentials.unwrap_or_else(|| panic!("{token}"));
            assert_eq!(
                (credentials.username(), credentials.password()),
                (username, password)
            );
        }
    }

    #[test]
    fn valid_heads_are_incomplete_until_their_last_byte() {
        check_complete(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n");
        check_complete(b"CONNECT [::1]:1 HTTP/1.0\n\n");
    }

    #[test]
    fn other_methods_get_405() {
        check("GET http://example.com/ HTTP/1.1\r\n\r\n", expect!["error: HTTP method GET is not allowed: this proxy only opens tunnels with CONNECT (use it for https:// URLs, or through SOCKS5) -> Some(405)"]);
        check("POST / HTTP/1.1\r\nHost: a\r\n", expect!["error: HTTP method POST is not allowed: this proxy only opens tunnels with CONNECT (use it for https:// URLs, or through SOCKS5) -> Some(405)"]);
        check("connect a:1 HTTP/1.1\r\n\r\n", expect!["error: HTTP method connect is not allowed: this proxy only opens tunnels with CONNECT (use it for https:// URLs, or through SOCKS5) -> Some(405)"]);
        check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", expect!["error: HTTP method PRI is not allowed: this proxy only opens tunnels with CONNECT (use it for https:// URLs, or through SOCKS5) -> Some(405)"]);
        check("GET\r\n", expect!["error: HTTP method GET is not allowed: this proxy only opens tunnels with CONNECT (use it for https:// URLs, or through SOCKS5) -> Some(405)"]);
        let long = format!("{} / HTTP/1.1\r\n\r\n", "X".repeat(100));
        check(&long, expect!["error: HTTP method XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX is not allowed: this proxy only opens tunnels with CONNECT (use it for https:// URLs, or through SOCKS5) -> Some(405)"]);
    }

    #[test]
    fn malformed_heads_get_400_or_407() {
        check("CONNECT example.com HTTP/1.1\r\n\r\n", expect!["error: bad CONNECT target: missing port: write host:port, e.g. example.com:443 or [2001:db8::1]:443 -> Some(400)"]);
        check("CONNECT ::1:443 HTTP/1.1\r\n\r\n", expect!["error: bad CONNECT target: an IPv6 address needs brackets: [2001:db8::1]:443 -> Some(400)"]);
        check(
            "CONNECT a:99999 HTTP/1.1\r\n\r\n",
            expect![
                "error: bad CONNECT target: the port is not a number from 0 to 65535 -> Some(400)"
            ],
        );
        check("CONNECT a\0b:1 HTTP/1.1\r\n\r\n", expect!["error: bad CONNECT target: byte 0x00 at offset 1 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode) -> Some(400)"]);
        check("CONNECT bücher.de:443 HTTP/1.1\r\n\r\n", expect!["error: bad CONNECT target: byte 0xc3 at offset 1 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode) -> Some(400)"]);
        check("CONNECT https://a:1/ HTTP/1.1\r\n\r\n", expect!["error: bad CONNECT target: a URL is not a host:port: write e.g. example.com:443 -> Some(400)"]);
        check("CONNECT  a:1 HTTP/1.1\r\n\r\n", expect!["error: malformed HTTP request line: expected `CONNECT host:port HTTP/1.1` -> Some(400)"]);
        check("CONNECT a:1\r\n\r\n", expect!["error: malformed HTTP request line: expected `CONNECT host:port HTTP/1.1` -> Some(400)"]);
        check(
            "CONNECT a:1 HTTP/1.1 \r\n\r\n",
            expect!["error: unsupported HTTP version: expected HTTP/1.1 or HTTP/1.0 -> Some(400)"],
        );
        check(
            "CONNECT a:1 HTTP/2\r\n\r\n",
            expect!["error: unsupported HTTP version: expected HTTP/1.1 or HTTP/1.0 -> Some(400)"],
        );
        check(
            "CONNECT a:1 http/1.1\r\n\r\n",
            expect!["error: unsupported HTTP version: expected HTTP/1.1 or HTTP/1.0 -> Some(400)"],
        );
        check("\r\nCONNECT a:1 HTTP/1.1\r\n\r\n", expect!["error: malformed HTTP request line: expected `CONNECT host:port HTTP/1.1` -> Some(400)"]);
        check("CON\rNECT a:1 HTTP/1.1\r\n\r\n", expect!["error: malformed HTTP request line: expected `CONNECT host:port HTTP/1.1` -> Some(400)"]);
        check("CONNECT a:1 HTTP/1.1\r\nHost : a\r\n\r\n", expect!["error: malformed HTTP header on line 2: the header name is not a token (no spaces before the ':') -> Some(400)"]);
        check("CONNECT a:1 HTTP/1.1\r\n: a\r\n\r\n", expect!["error: malformed HTTP header on line 2: the header name is not a token (no spaces before the ':') -> Some(400)"]);
        check(
            "CONNECT a:1 HTTP/1.1\r\nHost\r\n\r\n",
            expect![
                "error: malformed HTTP header on line 2: no ':' after the header name -> Some(400)"
            ],
        );
        check("CONNECT a:1 HTTP/1.1\r\nA: b\r\n c\r\n\r\n", expect!["error: malformed HTTP header on line 3: continuation lines (obsolete line folding) are not accepted -> Some(400)"]);
        check("CONNECT a:1 HTTP/1.1\r\nA: b\0c\r\n\r\n", expect!["error: malformed HTTP header on line 2: a control character in the header value -> Some(400)"]);
        check("CONNECT a:1 HTTP/1.1\r\nA: b\rc\r\n\r\n", expect!["error: malformed HTTP header on line 2: a control character in the header value -> Some(400)"]);
        check(
            "CONNECT a:1 HTTP/1.1\r\n\r\r\n\r\n",
            expect![
                "error: malformed HTTP header on line 2: no ':' after the header name -> Some(400)"
            ],
        );
        // Refused as soon as the bad line is complete, before the head ends.
        check("CONNECT a:1 HTTP/1.1\r\nA: b\0c\r\n", expect!["error: malformed HTTP header on line 2: a control character in the header value -> Some(400)"]);
        check("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\nproxy-authorization: Basic dTpw\r\n\r\n", expect!["error: more than one Proxy-Authorization header -> Some(400)"]);
        check("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Bearer abc\r\n\r\n", expect!["error: Proxy-Authorization uses a scheme other than Basic; this proxy accepts only Basic credentials -> Some(407)"]);
        check("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization:\r\n\r\n", expect!["error: malformed Proxy-Authorization Basic credentials: the header is empty -> Some(400)"]);
        check("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic\r\n\r\n", expect!["error: malformed Proxy-Authorization Basic credentials: nothing after `Basic` -> Some(400)"]);
        check("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic dTpw=\r\n\r\n", expect!["error: malformed Proxy-Authorization Basic credentials: not valid Base64 -> Some(400)"]);
        check("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U=\r\n\r\n", expect!["error: malformed Proxy-Authorization Basic credentials: no ':' between user name and password -> Some(400)"]);
        check(
            "CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic /zpw\r\n\r\n",
            expect!["error: the username is not valid UTF-8 -> Some(407)"],
        );
        let long_user = base64::encode(format!("{}:p", "u".repeat(256)).as_bytes());
        check(
            &format!("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic {long_user}\r\n\r\n"),
            expect!["error: the username is 256 bytes; the limit is 255 -> Some(407)"],
        );
    }

    #[test]
    fn the_head_is_limited_to_8_kib() {
        let head_of = |len: usize| {
            let start = "CONNECT example.com:443 HTTP/1.1\r\nX-Pad: ";
            let end = "\r\n\r\n";
            format!("{start}{}{end}", "p".repeat(len - start.len() - end.len())).into_bytes()
        };
        // Exactly at the limit: accepted, and incomplete before its end.
        let at_limit = head_of(MAX_HTTP_HEAD_BYTES);
        assert_eq!(at_limit.len(), 8192);
        assert_eq!(
            parse_http_connect(&at_limit).map(|(_, used)| used),
            Ok(8192)
        );
        assert_eq!(
            parse_http_connect(&at_limit[..8191]).err(),
            Some(ParseError::Incomplete)
        );
        // One byte over: refused once the limit is reached without an end.
        let over = head_of(MAX_HTTP_HEAD_BYTES + 1);
        assert_eq!(
            parse_http_connect(&over[..8191]).err(),
            Some(ParseError::Incomplete)
        );
        assert_eq!(
            parse_http_connect(&over[..8192]).err(),
            Some(ParseError::HeadTooLarge)
        );
        assert_eq!(
            parse_http_connect(&over).err(),
            Some(ParseError::HeadTooLarge)
        );
        check(
            &"G".repeat(10_000),
            expect!["error: HTTP request header too large: the request head exceeds 8192 bytes -> Some(400)"],
        );
        let many_lines = format!("CONNECT a:1 HTTP/1.1\r\n{}", "A: b\r\n".repeat(2000));
        check(&many_lines, expect!["error: HTTP request header too large: the request head exceeds 8192 bytes -> Some(400)"]);
    }

    #[test]
    fn requests_reencode_to_what_they_parsed_from() {
        let with_auth = ConnectRequest {
            target: "[2001:db8::1]:8443"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            credentials: Some(
                Credentials::new("alice", "open: sesame").unwrap_or_else(|e| panic!("{e}")),
            ),
        };
        let bytes = with_auth.encode();
        expect![[r#"
            CONNECT [2001:db8::1]:8443 HTTP/1.1
            Host: [2001:db8::1]:8443
            Proxy-Authorization: Basic YWxpY2U6b3Blbjogc2VzYW1l

        "#]]
        .assert_eq(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
        assert_eq!(check_complete(&bytes), with_auth);
    }

    #[test]
    fn replies_are_complete_response_heads() {
        let all: Vec<String> = HttpReply::ALL
            .into_iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.status(),
                    String::from_utf8_lossy(r.as_bytes()).escape_debug()
                )
            })
            .collect();
        expect![[r#"
            200 HTTP/1.1 200 Connection Established\r\n\r\n
            400 HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
            403 HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
            405 HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
            407 HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"tollway\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
            502 HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
            504 HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
        "#]]
        .assert_eq(&(all.join("\n") + "\n"));
        for reply in HttpReply::ALL {
            let text = reply.as_bytes();
            assert!(text.starts_with(format!("HTTP/1.1 {} ", reply.status()).as_bytes()));
            assert!(text.ends_with(b"\r\n\r\n"));
        }
    }
}
