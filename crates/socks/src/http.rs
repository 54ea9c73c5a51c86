//! The HTTP proxy's requests (message syntax RFC 9112) and the replies a
//! proxy sends back. CONNECT (RFC 9110 §9.3.6) opens a tunnel:
//!
//! ```text
//! CONNECT example.com:443 HTTP/1.1\r\n
//! Host: example.com:443\r\n
//! Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n
//! \r\n
//! ```
//!
//! Any other method with an absolute `http://` URL (what a program with
//! `http_proxy` set sends for a plain-HTTP URL) is one request to forward,
//! rewritten to the origin form a server expects:
//!
//! ```text
//! GET http://example.com/a?b HTTP/1.1\r\n      GET /a?b HTTP/1.1\r\n
//! Host: example.com\r\n                  ->    Host: example.com\r\n
//! Proxy-Connection: Keep-Alive\r\n              Accept: */*\r\n
//! Accept: */*\r\n                               Connection: keep-alive\r\n
//! \r\n                                          \r\n
//! ```

use crate::base64;
use crate::body::BodyLength;
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

/// A parsed proxy request head: a tunnel, or one request to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRequest {
    /// `CONNECT host:port`: from the next byte on, the connection carries
    /// the tunnel.
    Connect(ConnectRequest),
    /// A request whose target is an absolute `http://` URL (RFC 9112
    /// §3.2.2), what a program sends to its `http_proxy`: the proxy
    /// connects to the URL's host and forwards this one request
    /// ([`ForwardRequest::origin_head`]) and its body.
    Forward(ForwardRequest),
}

impl HttpRequest {
    /// Where the proxy connects.
    pub fn target(&self) -> &Target {
        match self {
            HttpRequest::Connect(c) => &c.target,
            HttpRequest::Forward(f) => &f.target,
        }
    }

    /// From `Proxy-Authorization: Basic ...`, if the client sent it.
    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            HttpRequest::Connect(c) => c.credentials.as_ref(),
            HttpRequest::Forward(f) => f.credentials.as_ref(),
        }
    }

    /// The request head's bytes as a client sends them to the proxy.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            HttpRequest::Connect(c) => c.encode(),
            HttpRequest::Forward(f) => f.encode(),
        }
    }
}

/// A request in absolute form, to be sent on to the URL's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRequest {
    /// The method token, as sent (`GET`, `POST`, ...).
    pub method: String,
    /// The URL's authority as written (`example.com`, `[2001:db8::1]:8080`):
    /// the origin's `Host` header.
    pub authority: String,
    /// Where to connect: the authority, on port 80 when it names none.
    pub target: Target,
    /// The URL's path and query in origin form: `/` at least, no fragment.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: &'static str,
    /// The end-to-end header lines, as sent: without `Host` (the URL's
    /// authority replaces it, RFC 9112 §3.2.2), `Proxy-Authorization`
    /// (the proxy's, consumed here) and the hop-by-hop headers
    /// (RFC 9110 §7.6.1: `Connection`, the fields it names,
    /// `Proxy-Connection`, `Keep-Alive`, `Upgrade`).
    pub headers: Vec<Vec<u8>>,
    /// Where the body that follows the head ends, from its framing
    /// headers (RFC 9112 §6.3): the front end sends the origin no byte
    /// past it.
    pub body: BodyLength,
    /// The protocols an HTTP/1.1 request asks to switch to (`Upgrade`,
    /// named in `Connection`; RFC 9110 §7.8), e.g. `websocket`: passed on
    /// with `Connection: Upgrade` instead of `close`, and after the body the
    /// connection is the new protocol's, both ways.
    pub upgrade: Option<Vec<u8>>,
    /// Whether the program's connection may carry another request after
    /// this one's response (RFC 9112 §9.3): HTTP/1.1 unless `Connection`
    /// names `close`, HTTP/1.0 only if it names `keep-alive`.
    pub keep_alive: bool,
    /// From `Proxy-Authorization: Basic ...`, if the client sent it.
    pub credentials: Option<Credentials>,
}

impl ForwardRequest {
    /// The head the origin server gets: origin-form request line, `Host`
    /// from the URL, the end-to-end headers, and `Connection: keep-alive`
    /// when the proxy means to send the next request on the same
    /// connection, `close` otherwise (or, for an upgrade, `Upgrade` and
    /// `Connection: Upgrade`).
    pub fn origin_head(&self, keep_alive: bool) -> Vec<u8> {
        let head = format!("{} {} {}\r\nHost: {}\r\n", self.method, self.path, self.version, self.authority);
        let token = match (&self.upgrade, keep_alive) {
            (Some(_), _) => "Upgrade",
            (None, true) => "keep-alive",
            (None, false) => "close",
        };
        self.with_headers(head, &self.connection_lines(&[token]))
    }

    /// Whether the request may be sent again on a fresh connection when
    /// the kept one closed before any answer (RFC 9112 §9.3.1): a safe
    /// method with no body, so the origin cannot have applied it.
    pub fn retryable(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE") && self.body == BodyLength::Empty
    }

    /// The request head's bytes as a client sends them to the proxy.
    pub fn encode(&self) -> Vec<u8> {
        // `*` is what an OPTIONS for the origin as a whole becomes; the
        // proxy is asked for it by the URL with no path.
        let path = if self.path == "*" { "" } else { &self.path };
        let mut head = format!("{} http://{}{} {}\r\nHost: {}\r\n", self.method, self.authority, path, self.version, self.authority);
        if let Some(credentials) = &self.credentials {
            head.push_str("Proxy-Authorization: ");
            head.push_str(&credentials.basic_header_value());
            head.push_str("\r\n");
        }
        let mut tokens = Vec::new();
        if self.upgrade.is_some() {
            tokens.push("upgrade");
        }
        match (self.version, self.keep_alive) {
            ("HTTP/1.1", false) => tokens.push("close"),
            ("HTTP/1.0", true) => tokens.push("keep-alive"),
            _ => {}
        }
        self.with_headers(head, &self.connection_lines(&tokens))
    }

    /// The `Upgrade` line, if the request asks for one, and a `Connection`
    /// line naming `tokens`, if any.
    fn connection_lines(&self, tokens: &[&str]) -> Vec<u8> {
        let mut lines = Vec::new();
        if let Some(protocols) = &self.upgrade {
            lines = [b"Upgrade: ", &protocols[..], b"\r\n"].concat();
        }
        if !tokens.is_empty() {
            lines.extend_from_slice(format!("Connection: {}\r\n", tokens.join(", ")).as_bytes());
        }
        lines
    }

    /// Whether it carries `Authorization`: some schemes (NTLM, Negotiate,
    /// RFC 4559) authenticate the connection it goes on, not the request.
    pub fn authorizes(&self) -> bool {
        header_values(&self.headers, b"authorization").next().is_some()
    }

    /// `start`, then the end-to-end header lines, then `last` (whole
    /// lines) and the empty line that ends a head.
    fn with_headers(&self, start: String, last: &[u8]) -> Vec<u8> {
        let mut head = start.into_bytes();
        for line in &self.headers {
            head.extend_from_slice(line);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(last);
        head.extend_from_slice(b"\r\n");
        head
    }
}

/// Parses a proxy request head: `Ok((request, bytes used))`, the bytes
/// used ending with the empty line, so anything after them is the
/// client's first tunnel bytes (CONNECT) or the request's body (forward).
///
/// Lines end in CRLF, or a bare LF (RFC 9112 §2.2 lets a recipient accept
/// one). Each line is checked as soon as it is complete, so a bad request
/// line or header is refused without waiting for the rest. A head longer
/// than [`MAX_HTTP_HEAD_BYTES`] is refused ([`ParseError::HeadTooLarge`]),
/// so the driver never buffers more than that.
pub fn parse_http_request(buf: &[u8]) -> Result<(HttpRequest, usize), ParseError> {
    let mut pos = 0;
    let mut line_number = 0;
    let mut start = None;
    let mut credentials = None;
    let mut headers = Vec::new();
    loop {
        let (line, next) = head_line(buf, pos, MAX_HTTP_HEAD_BYTES, ParseError::HeadTooLarge)?;
        pos = next;
        line_number += 1;
        match start {
            None => start = Some(parse_request_line(line)?),
            Some(start) if line.is_empty() => {
                let request = match start {
                    RequestLine::Connect(target) => HttpRequest::Connect(ConnectRequest { target, credentials }),
                    RequestLine::Forward(f) => {
                        let upgrade = if f.version == "HTTP/1.1" { upgrade_of(&headers) } else { None };
                        // Both framings (RFC 9112 §6.1): sent on as chunked,
                        // and the connection closes after the response, as
                        // the pair is what request smuggling plays on.
                        let both_framings = header_values(&headers, b"transfer-encoding").next().is_some()
                            && header_values(&headers, b"content-length").next().is_some();
                        let keep_alive = persistent(f.version, &headers) && !both_framings;
                        let (body, headers) = framing(end_to_end(headers))?;
                        HttpRequest::Forward(ForwardRequest {
                            method: f.method,
                            authority: f.authority,
                            target: f.target,
                            path: f.path,
                            version: f.version,
                            headers,
                            body,
                            upgrade,
                            keep_alive,
                            credentials,
                        })
                    }
                };
                return Ok((request, pos));
            }
            Some(ref start) => {
                if parse_header(line, line_number, &mut credentials)? == Header::Other
                    && matches!(start, RequestLine::Forward(_))
                {
                    headers.push(line);
                }
            }
        }
    }
}

/// The line of a head that starts at `pos`, without its CRLF or bare LF,
/// and where the next one starts. `Incomplete` until the line end has
/// come, unless the head already reaches `limit` bytes: then `too_large`.
pub(crate) fn head_line(buf: &[u8], pos: usize, limit: usize, too_large: ParseError) -> Result<(&[u8], usize), ParseError> {
    let window = &buf[..buf.len().min(limit)];
    let Some(len) = window[pos..].iter().position(|&b| b == b'\n') else {
        return Err(if buf.len() >= limit { too_large } else { ParseError::Incomplete });
    };
    let line = &window[pos..pos + len];
    Ok((line.strip_suffix(b"\r").unwrap_or(line), pos + len + 1))
}

/// A request line: CONNECT's target, or the parts of an absolute-form one.
enum RequestLine {
    Connect(Target),
    Forward(ForwardLine),
}

struct ForwardLine {
    method: String,
    authority: String,
    target: Target,
    path: String,
    version: &'static str,
}

const SHAPE: &str = "expected `CONNECT host:port HTTP/1.1` or `GET http://host/path HTTP/1.1`";

/// `method SP request-target SP HTTP-version`, single spaces (RFC 9112
/// §3): CONNECT with `host:port`, any other method with an absolute
/// `http://` URL.
fn parse_request_line(line: &[u8]) -> Result<RequestLine, ParseError> {
    let (method, rest) = split_once(line, b' ').unwrap_or((line, &[]));
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadRequestLine(SHAPE));
    }
    let (target, version) = split_once(rest, b' ').ok_or(ParseError::BadRequestLine(SHAPE))?;
    if target.is_empty() {
        return Err(ParseError::BadRequestLine(SHAPE));
    }
    let version = match version {
        b"HTTP/1.1" => "HTTP/1.1",
        b"HTTP/1.0" => "HTTP/1.0",
        _ => return Err(ParseError::UnsupportedHttpVersion),
    };
    // Methods are case-sensitive (RFC 9110 §9.1).
    if method == b"CONNECT" {
        let target = ascii(target)?.parse().map_err(ParseError::BadAuthority)?;
        return Ok(RequestLine::Connect(target));
    }
    let (authority, target, path) = match parse_http_url(target) {
        Ok(url) => url,
        // `connect a:1` was told it was "not a proxy request". (`connect`
        // with a URL is a method of its own, forwarded as it is.)
        Err(_) if method.eq_ignore_ascii_case(b"CONNECT") => {
            return Err(ParseError::BadRequestLine("method names are case-sensitive: CONNECT, in capitals"))
        }
        Err(e) => return Err(e),
    };
    let path = match path {
        // An OPTIONS for the origin as a whole (no path, no query) asks it
        // as `OPTIONS *` (RFC 9112 §3.2.4); any other request, for `/`.
        None if method == b"OPTIONS" => "*".to_string(),
        None => "/".to_string(),
        Some(path) => path,
    };
    // A token is ASCII.
    let method = String::from_utf8_lossy(method).into_owned();
    Ok(RequestLine::Forward(ForwardLine { method, authority, target, path, version }))
}

/// `http://authority[/path][?query][#fragment]` (RFC 9112 §3.2.2, RFC 3986
/// §3): the authority as written, where to connect, and the origin-form
/// path (the fragment is the client's alone), `None` when the URL has
/// neither path nor query.
fn parse_http_url(url: &[u8]) -> Result<(String, Target, Option<String>), ParseError> {
    let has_scheme = |scheme: &[u8]| url.len() >= scheme.len() && url[..scheme.len()].eq_ignore_ascii_case(scheme);
    if !has_scheme(b"http://") {
        return Err(if has_scheme(b"https://") {
            ParseError::BadUrl("an https:// URL goes through CONNECT (the program's TLS runs end to end inside the tunnel); this one asked the proxy to fetch it")
        } else {
            ParseError::NotProxyRequest
        });
    }
    let rest = &url[b"http://".len()..];
    let end = rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains(&b'@') {
        return Err(ParseError::BadUrl("user:password@ in a URL is not forwarded"));
    }
    let authority = ascii(authority).map_err(|e| match e {
        ParseError::BadAuthority(e) => ParseError::BadUrlHost(e),
        e => e,
    })?;
    // RFC 3986 §3.2.3: an empty port is the scheme's default.
    let bare = authority.strip_suffix(':').unwrap_or(authority);
    let has_port = match bare.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => bare.contains(':'),
    };
    let with_port = if has_port { bare.to_string() } else { format!("{bare}:80") };
    let target = with_port.parse().map_err(ParseError::BadUrlHost)?;
    let path = &path[..path.iter().position(|&b| b == b'#').unwrap_or(path.len())];
    if path.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
        return Err(ParseError::BadUrl("the path holds a byte that is not printable ASCII (percent-encode it)"));
    }
    if path.is_empty() {
        return Ok((authority.to_string(), target, None));
    }
    // ASCII by the check above.
    let path = String::from_utf8_lossy(path);
    let path = if path.starts_with('/') { path.into_owned() } else { format!("/{path}") };
    Ok((authority.to_string(), target, Some(path)))
}

/// The headers a forwarded request keeps: every line but `Host`,
/// `Proxy-Authorization` and the hop-by-hop ones. The body's framing
/// (`Content-Length`, `Transfer-Encoding`) always stays, even if
/// `Connection` names it: the body is passed on as it comes.
pub(crate) fn end_to_end(lines: Vec<&[u8]>) -> Vec<Vec<u8>> {
    let name_of = |line: &[u8]| split_once(line, b':').map_or(line, |(name, _)| name).to_ascii_lowercase();
    let mut dropped: Vec<Vec<u8>> =
        [&b"host"[..], b"proxy-authorization", b"connection", b"proxy-connection", b"keep-alive", b"upgrade"]
            .iter()
            .map(|n| n.to_vec())
            .collect();
    for token in header_list(&lines, b"connection") {
        let token = token.to_ascii_lowercase();
        if token != b"content-length" && token != b"transfer-encoding" {
            dropped.push(token);
        }
    }
    lines.into_iter().filter(|line| !dropped.contains(&name_of(line))).map(|line| line.to_vec()).collect()
}

/// The trimmed values of the header lines named `name`.
pub(crate) fn header_values<'a, L: AsRef<[u8]>>(lines: &'a [L], name: &'static [u8]) -> impl Iterator<Item = &'a [u8]> {
    lines
        .iter()
        .filter_map(|line| split_once(line.as_ref(), b':'))
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| trim_whitespace(v))
}

/// The comma-separated elements of the header lines named `name`
/// (RFC 9110 §5.6.1), empty ones skipped.
pub(crate) fn header_list<'a, L: AsRef<[u8]>>(lines: &'a [L], name: &'static [u8]) -> impl Iterator<Item = &'a [u8]> {
    header_values(lines, name).flat_map(|v| v.split(|&b| b == b',')).map(trim_whitespace).filter(|t| !t.is_empty())
}

/// The protocols a request asks to switch to: its `Upgrade` values,
/// joined, if `Connection` names `upgrade` (RFC 9110 §7.8); `None` else,
/// and the `Upgrade` line is dropped with the other hop-by-hop ones.
fn upgrade_of(lines: &[&[u8]]) -> Option<Vec<u8>> {
    let asked = header_list(lines, b"connection").any(|token| token.eq_ignore_ascii_case(b"upgrade"));
    let protocols: Vec<&[u8]> = header_values(lines, b"upgrade").filter(|v| !v.is_empty()).collect();
    (asked && !protocols.is_empty()).then(|| protocols.join(&b", "[..]))
}

/// Whether a message of `version` with these header lines leaves its
/// connection open for the next (RFC 9112 §9.3).
pub(crate) fn persistent<L: AsRef<[u8]>>(version: &str, lines: &[L]) -> bool {
    let names = |token: &[u8]| header_list(lines, b"connection").any(|t| t.eq_ignore_ascii_case(token));
    if version == "HTTP/1.1" {
        !names(b"close")
    } else {
        names(b"keep-alive")
    }
}

/// The body's length from the framing headers among `headers`, and the
/// headers to send on (RFC 9112 §6.3): `Transfer-Encoding` ending in
/// `chunked` decides and any `Content-Length` is dropped (§6.1: an
/// intermediary must not pass on both, the pair that request smuggling
/// plays on); else the `Content-Length`, whose values must agree; else no
/// body.
fn framing(headers: Vec<Vec<u8>>) -> Result<(BodyLength, Vec<Vec<u8>>), ParseError> {
    if header_values(&headers, b"transfer-encoding").next().is_some() {
        if !is_chunked(&headers) {
            return Err(ParseError::BadFraming("a request's Transfer-Encoding must end in chunked"));
        }
        return Ok((BodyLength::Chunked, without_content_length(headers)));
    }
    Ok((content_length(&headers)?.map_or(BodyLength::Empty, BodyLength::Bytes), headers))
}

/// Whether `Transfer-Encoding`'s last coding is `chunked`.
pub(crate) fn is_chunked<L: AsRef<[u8]>>(headers: &[L]) -> bool {
    header_list(headers, b"transfer-encoding").last().is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// `headers` without their `Content-Length` lines.
pub(crate) fn without_content_length(headers: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let is_length = |line: &Vec<u8>| header_values(std::slice::from_ref(line), b"content-length").next().is_some();
    headers.into_iter().filter(|line| !is_length(line)).collect()
}

/// The `Content-Length`, if any: every value a number, all of them equal
/// (RFC 9112 §6.3, rule 5).
pub(crate) fn content_length<L: AsRef<[u8]>>(headers: &[L]) -> Result<Option<u64>, ParseError> {
    let mut length = None;
    // Not `header_list`: an empty element here is an error, not skipped.
    for v in header_values(headers, b"content-length").flat_map(|v| v.split(|&b| b == b',')) {
        let v = trim_whitespace(v);
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadFraming("Content-Length is not a number"));
        }
        let n: u64 = std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or(ParseError::BadFraming("Content-Length does not fit in 64 bits"))?;
        if length.is_some_and(|l| l != n) {
            return Err(ParseError::BadFraming("Content-Length values disagree"));
        }
        length = Some(n);
    }
    Ok(length)
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

/// Which header a line was.
#[derive(PartialEq)]
enum Header {
    ProxyAuthorization,
    Other,
}

/// `name: value` (RFC 9110 §5, RFC 9112 §5). Proxy-Authorization is read
/// into `credentials`; its name, like every field name, is
/// case-insensitive.
fn parse_header(
    line: &[u8],
    line_number: usize,
    credentials: &mut Option<Credentials>,
) -> Result<Header, ParseError> {
    let (name, value) = header_field(line, line_number)?;
    if name.eq_ignore_ascii_case(b"proxy-authorization") {
        if credentials.is_some() {
            return Err(ParseError::DuplicateProxyAuthorization);
        }
        match parse_basic(value) {
            Ok(given) => *credentials = Some(given),
            // Another scheme (Negotiate, NTLM, Bearer), which a program
            // may send to every proxy: read as no credentials, so a proxy
            // that wants them asks with 407 as for none, and an open proxy
            // serves (refused here, it answered 407 to a proxy that asks
            // for nothing). The header is the proxy's: it goes no further.
            Err(ParseError::UnsupportedAuthScheme) => {}
            Err(e) => return Err(e),
        }
        return Ok(Header::ProxyAuthorization);
    }
    Ok(Header::Other)
}

/// A header line's name and trimmed value, checked: a token for the name,
/// no control characters in the value, no obsolete line folding.
pub(crate) fn header_field(line: &[u8], line_number: usize) -> Result<(&[u8], &[u8]), ParseError> {
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
    Ok((name, value))
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

pub(crate) fn trim_whitespace(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

pub(crate) fn split_once(s: &[u8], delimiter: u8) -> Option<(&[u8], &[u8])> {
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
    /// 407: credentials are required (`Proxy-Authenticate: Basic`).
    ProxyAuthRequired,
    /// 431: the request head is longer than the proxy reads (RFC 6585
    /// §5), which a program may answer by sending fewer cookies.
    HeadTooLarge,
    /// 502: the exit could not reach the target.
    BadGateway,
    /// 503: the route carries as many connections as its exit allows, and
    /// none ended while this one waited (RFC 9110 §15.6.4: a temporary
    /// overload).
    ServiceUnavailable,
    /// 504: the exit did not reach the target in time.
    GatewayTimeout,
}

impl HttpReply {
    pub const ALL: [HttpReply; 8] = [
        HttpReply::Established,
        HttpReply::BadRequest,
        HttpReply::Forbidden,
        HttpReply::ProxyAuthRequired,
        HttpReply::HeadTooLarge,
        HttpReply::BadGateway,
        HttpReply::ServiceUnavailable,
        HttpReply::GatewayTimeout,
    ];

    pub fn status(self) -> u16 {
        match self {
            HttpReply::Established => 200,
            HttpReply::BadRequest => 400,
            HttpReply::Forbidden => 403,
            HttpReply::ProxyAuthRequired => 407,
            HttpReply::HeadTooLarge => 431,
            HttpReply::BadGateway => 502,
            HttpReply::ServiceUnavailable => 503,
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
            HttpReply::ProxyAuthRequired => {
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"tollway\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n"
            }
            HttpReply::HeadTooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            HttpReply::BadGateway => b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            HttpReply::ServiceUnavailable => {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            HttpReply::GatewayTimeout => {
                b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
        }
    }

    /// The response with `message` as its plain-text body, which a program
    /// shows for a plain-HTTP URL (for a CONNECT, curl shows the status).
    /// `Established` has no body: its head alone.
    pub fn with_message(self, message: &str) -> Vec<u8> {
        const EMPTY: &[u8] = b"Content-Length: 0\r\nConnection: close\r\n\r\n";
        let head = self.as_bytes();
        let Some(start) = head.strip_suffix(EMPTY) else { return head.to_vec() };
        let mut out = start.to_vec();
        let body = format!("{message}\n");
        out.extend_from_slice(
            format!("Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                .as_bytes(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check(input: &str, want: Expect) {
        let got = match parse_http_request(input.as_bytes()) {
            Ok((request, used)) => {
                let credentials = match request.credentials() {
                    Some(c) => format!(" user={:?} password={:?}", c.username(), c.password()),
                    None => String::new(),
                };
                let what = match &request {
                    HttpRequest::Connect(c) => format!("CONNECT {}", c.target),
                    HttpRequest::Forward(f) => format!(
                        "to {} send {:?} body {:?}",
                        f.target,
                        String::from_utf8_lossy(&f.origin_head(false)),
                        f.body
                    ),
                };
                format!("{what}{credentials} (used {used} of {})", input.len())
            }
            Err(e) => format!("error: {e} -> {:?}", e.http_reply().map(HttpReply::status)),
        };
        want.assert_eq(&got);
    }

    /// Every strict prefix is `Incomplete`; the whole parses, and again
    /// the same with tunnel bytes after it.
    fn check_complete(input: &[u8]) -> HttpRequest {
        for cut in 0..input.len() {
            assert_eq!(
                parse_http_request(&input[..cut]).err(),
                Some(ParseError::Incomplete),
                "{:?} cut at {cut}",
                String::from_utf8_lossy(input)
            );
        }
        let (request, used) = parse_http_request(input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(used, input.len());
        let mut longer = input.to_vec();
        longer.extend_from_slice(b"\x16\x03\x01 TLS bytes\r\n\r\n");
        assert_eq!(parse_http_request(&longer), Ok((request.clone(), used)));
        request
    }

    /// A plain-HTTP request head, parsed.
    fn forward(head: &str) -> ForwardRequest {
        match parse_http_request(head.as_bytes()) {
            Ok((HttpRequest::Forward(f), _)) => f,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_safe_requests_without_a_body_are_sent_twice() {
        assert!(forward("GET http://a/ HTTP/1.1\r\n\r\n").retryable());
        assert!(forward("HEAD http://a/ HTTP/1.1\r\n\r\n").retryable());
        assert!(!forward("GET http://a/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n").retryable());
        assert!(!forward("POST http://a/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n").retryable());
        assert!(!forward("DELETE http://a/ HTTP/1.1\r\n\r\n").retryable());
        let head = String::from_utf8(forward("GET http://a/ HTTP/1.1\r\n\r\n").origin_head(true)).unwrap();
        assert_eq!(head, "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
    }

    #[test]
    fn a_request_with_authorization_is_told_apart() {
        assert!(forward("GET http://a/ HTTP/1.1\r\nauthorization: NTLM TlRMTVNTUAAB\r\n\r\n").authorizes());
        assert!(forward("GET http://a/ HTTP/1.1\r\nAuthorization:Basic YTpi\r\n\r\n").authorizes());
        // The proxy's own credentials are consumed, not passed on.
        assert!(!forward("GET http://a/ HTTP/1.1\r\nProxy-Authorization: Basic YTpi\r\n\r\n").authorizes());
        assert!(!forward("GET http://a/ HTTP/1.1\r\nX-Authorization: 1\r\n\r\n").authorizes());
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
                let credentials = request.credentials().unwrap_or_else(|| panic!("{head}"));
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
                parse_http_request(head.as_bytes()).unwrap_or_else(|e| panic!("{token}: {e}"));
            let credentials = request.credentials().unwrap_or_else(|| panic!("{token}"));
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
        check_complete(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
    }

    #[test]
    fn absolute_urls_are_forwarded_in_origin_form() {
        check(
            "GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n",
            expect![[r#"to example.com:80 send "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nConnection: close\r\n\r\n" body Empty (used 130 of 130)"#]],
        );
        // The URL's authority is the Host (RFC 9112 §3.2.2), whatever the
        // client's Host said; no path is `/`, a query alone gets one, the
        // fragment stays with the client, the scheme is case-insensitive.
        check(
            "POST HTTP://[2001:db8::1]:8080?q=1#top HTTP/1.0\r\nhost: elsewhere\r\nContent-Length: 3\r\n\r\nabc",
            expect![[r#"to [2001:db8::1]:8080 send "POST /?q=1 HTTP/1.0\r\nHost: [2001:db8::1]:8080\r\nContent-Length: 3\r\nConnection: close\r\n\r\n" body Bytes(3) (used 87 of 90)"#]],
        );
        check(
            "HEAD http://192.0.2.1: HTTP/1.1\r\n\r\n",
            expect![[r#"to 192.0.2.1:80 send "HEAD / HTTP/1.1\r\nHost: 192.0.2.1:\r\nConnection: close\r\n\r\n" body Empty (used 35 of 35)"#]],
        );
        // Hop-by-hop headers go, with the ones Connection names, but never
        // the body's framing; the proxy's own credentials go too.
        check(
            "PUT http://a:81/x HTTP/1.1\r\nConnection: keep-alive, X-Hop, Transfer-Encoding\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\nX-End: 2\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
            expect![[r#"to a:81 send "PUT /x HTTP/1.1\r\nHost: a:81\r\nTransfer-Encoding: chunked\r\nX-End: 2\r\nConnection: close\r\n\r\n" body Chunked user="u" password="p" (used 204 of 204)"#]],
        );
    }

    #[test]
    fn an_options_for_the_whole_origin_goes_as_an_asterisk() {
        check(
            "OPTIONS http://a:81 HTTP/1.1\r\n\r\n",
            expect![[r#"to a:81 send "OPTIONS * HTTP/1.1\r\nHost: a:81\r\nConnection: close\r\n\r\n" body Empty (used 32 of 32)"#]],
        );
        // With a path or a query it asks for that; other methods ask for `/`.
        check(
            "OPTIONS http://a:81/ HTTP/1.1\r\n\r\n",
            expect![[r#"to a:81 send "OPTIONS / HTTP/1.1\r\nHost: a:81\r\nConnection: close\r\n\r\n" body Empty (used 33 of 33)"#]],
        );
        check(
            "OPTIONS http://a:81?x HTTP/1.1\r\n\r\n",
            expect![[r#"to a:81 send "OPTIONS /?x HTTP/1.1\r\nHost: a:81\r\nConnection: close\r\n\r\n" body Empty (used 34 of 34)"#]],
        );
        check(
            "GET http://a:81#top HTTP/1.1\r\n\r\n",
            expect![[r#"to a:81 send "GET / HTTP/1.1\r\nHost: a:81\r\nConnection: close\r\n\r\n" body Empty (used 32 of 32)"#]],
        );
        // Encoded for a proxy again, it is the URL with no path.
        let (request, _) = parse_http_request(b"OPTIONS http://a:81 HTTP/1.1\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(request.encode().starts_with(b"OPTIONS http://a:81 HTTP/1.1\r\n"));
    }

    #[test]
    fn a_request_keeps_its_connection_unless_it_says_otherwise() {
        let keeps = |head: &str| match parse_http_request(head.as_bytes()) {
            Ok((HttpRequest::Forward(f), _)) => f.keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(keeps("GET http://a/ HTTP/1.1\r\n\r\n"));
        assert!(!keeps("GET http://a/ HTTP/1.1\r\nConnection: TE, Close\r\n\r\n"));
        assert!(!keeps("GET http://a/ HTTP/1.0\r\n\r\n"));
        assert!(keeps("GET http://a/ HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        // Chunked with a Content-Length too: the next request on the
        // connection could be one the origin reads as this one's body.
        assert!(keeps("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(keeps("POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\n\r\n"));
        assert!(!keeps("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"));
        assert!(!keeps("POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn an_upgrade_is_passed_on_when_connection_names_it() {
        check(
            "GET http://a/chat HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nKeep-Alive: 5\r\n\r\n",
            expect![[r#"to a:80 send "GET /chat HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" body Empty (used 120 of 120)"#]],
        );
        // Not named in Connection, or HTTP/1.0: dropped as hop-by-hop.
        check("GET http://a/ HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", expect![[r#"to a:80 send "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" body Empty (used 46 of 46)"#]]);
        check("GET http://a/ HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", expect![[r#"to a:80 send "GET / HTTP/1.0\r\nHost: a\r\nConnection: close\r\n\r\n" body Empty (used 67 of 67)"#]]);
    }

    #[test]
    fn a_forwarded_body_is_framed_by_its_headers() {
        check(
            "POST http://a/ HTTP/1.1\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n",
            expect![[r#"to a:80 send "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\nConnection: close\r\n\r\n" body Bytes(5) (used 68 of 68)"#]],
        );
        // Transfer-Encoding decides, and the Content-Length beside it is
        // not passed on (RFC 9112 §6.1).
        check(
            "POST http://a/ HTTP/1.1\r\nContent-Length: 9\r\nTransfer-Encoding: gzip,\r\nTransfer-Encoding: Chunked\r\n\r\n",
            expect![[r#"to a:80 send "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip,\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n" body Chunked (used 100 of 100)"#]],
        );
        check("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", expect!["error: bad body framing: a request's Transfer-Encoding must end in chunked -> Some(400)"]);
        check("POST http://a/ HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", expect!["error: bad body framing: a request's Transfer-Encoding must end in chunked -> Some(400)"]);
        check("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", expect!["error: bad body framing: Content-Length values disagree -> Some(400)"]);
        check("POST http://a/ HTTP/1.1\r\nContent-Length: 5,\r\n\r\n", expect!["error: bad body framing: Content-Length is not a number -> Some(400)"]);
        check("POST http://a/ HTTP/1.1\r\nContent-Length: +5\r\n\r\n", expect!["error: bad body framing: Content-Length is not a number -> Some(400)"]);
        check("POST http://a/ HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", expect!["error: bad body framing: Content-Length does not fit in 64 bits -> Some(400)"]);
    }

    #[test]
    fn requests_that_cannot_be_forwarded_get_400() {
        check("GET / HTTP/1.1\r\nHost: a\r\n", expect!["error: not a proxy request: this port is an HTTP and SOCKS5 proxy; send `CONNECT host:port` or a URL in full (`GET http://example.com/ HTTP/1.1`), i.e. set it as the program's proxy -> Some(400)"]);
        check("connect a:1 HTTP/1.1\r\n\r\n", expect!["error: malformed HTTP request line: method names are case-sensitive: CONNECT, in capitals -> Some(400)"]);
        // With a URL, `connect` is a method of its own, forwarded as sent.
        assert!(matches!(parse_request_line(b"connect http://a/ HTTP/1.1"), Ok(RequestLine::Forward(f)) if f.method == "connect"));
        check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", expect!["error: unsupported HTTP version: expected HTTP/1.1 or HTTP/1.0 -> Some(400)"]);
        check("GET\r\n", expect!["error: malformed HTTP request line: expected `CONNECT host:port HTTP/1.1` or `GET http://host/path HTTP/1.1` -> Some(400)"]);
        check("GET https://example.com/ HTTP/1.1\r\n\r\n", expect!["error: bad URL in the request line: an https:// URL goes through CONNECT (the program's TLS runs end to end inside the tunnel); this one asked the proxy to fetch it -> Some(400)"]);
        check("GET http://u:p@example.com/ HTTP/1.1\r\n\r\n", expect!["error: bad URL in the request line: user:password@ in a URL is not forwarded -> Some(400)"]);
        check("GET http:///x HTTP/1.1\r\n\r\n", expect!["error: bad host in the URL: the host name is empty -> Some(400)"]);
        check("GET http://::1/x HTTP/1.1\r\n\r\n", expect!["error: bad host in the URL: an IPv6 address needs brackets: [2001:db8::1]:443 -> Some(400)"]);
        check("GET http://a:70000/ HTTP/1.1\r\n\r\n", expect!["error: bad host in the URL: the port is not a number from 0 to 65535 -> Some(400)"]);
        check("GET http://bücher.de/ HTTP/1.1\r\n\r\n", expect!["error: bad host in the URL: byte 0xc3 at offset 1 is not allowed in a host name (letters, digits, '-', '_' and '.' only; write international names in punycode) -> Some(400)"]);
        check("GET http://a/\x7f HTTP/1.1\r\n\r\n", expect!["error: bad URL in the request line: the path holds a byte that is not printable ASCII (percent-encode it) -> Some(400)"]);
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
        check("CONNECT  a:1 HTTP/1.1\r\n\r\n", expect!["error: malformed HTTP request line: expected `CONNECT host:port HTTP/1.1` or `GET http://host/path HTTP/1.1` -> Some(400)"]);
        check("CONNECT a:1\r\n\r\n", expect!["error: malformed HTTP request line: expected `CONNECT host:port HTTP/1.1` or `GET http://host/path HTTP/1.1` -> Some(400)"]);
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
        check("\r\nCONNECT a:1 HTTP/1.1\r\n\r\n", expect!["error: malformed HTTP request line: expected `CONNECT host:port HTTP/1.1` or `GET http://host/path HTTP/1.1` -> Some(400)"]);
        check("CON\rNECT a:1 HTTP/1.1\r\n\r\n", expect!["error: malformed HTTP request line: expected `CONNECT host:port HTTP/1.1` or `GET http://host/path HTTP/1.1` -> Some(400)"]);
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
        // Another scheme: no credentials (a proxy that wants some asks).
        check("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Bearer abc\r\n\r\n", expect!["CONNECT a:1 (used 57 of 57)"]);
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
            parse_http_request(&at_limit).map(|(_, used)| used),
            Ok(8192)
        );
        assert_eq!(
            parse_http_request(&at_limit[..8191]).err(),
            Some(ParseError::Incomplete)
        );
        // One byte over: refused once the limit is reached without an end.
        let over = head_of(MAX_HTTP_HEAD_BYTES + 1);
        assert_eq!(
            parse_http_request(&over[..8191]).err(),
            Some(ParseError::Incomplete)
        );
        assert_eq!(
            parse_http_request(&over[..8192]).err(),
            Some(ParseError::HeadTooLarge)
        );
        assert_eq!(
            parse_http_request(&over).err(),
            Some(ParseError::HeadTooLarge)
        );
        check(
            &"G".repeat(10_000),
            expect!["error: HTTP request header too large: the request head exceeds 8192 bytes -> Some(431)"],
        );
        let many_lines = format!("CONNECT a:1 HTTP/1.1\r\n{}", "A: b\r\n".repeat(2000));
        check(&many_lines, expect!["error: HTTP request header too large: the request head exceeds 8192 bytes -> Some(431)"]);
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
        assert_eq!(check_complete(&bytes), HttpRequest::Connect(with_auth));
    }

    #[test]
    fn forwarded_requests_reencode_to_what_they_parsed_from() {
        let head = b"DELETE http://Example.com:8080/item?id=7 HTTP/1.1\r\nproxy-authorization: basic dTpw\r\nX-A:  1 \r\nAccept: */*\r\n\r\n";
        let request = check_complete(head);
        let bytes = request.encode();
        expect![[r#"
            DELETE http://Example.com:8080/item?id=7 HTTP/1.1
            Host: Example.com:8080
            Proxy-Authorization: Basic dTpw
            X-A:  1 
            Accept: */*

        "#]]
        .assert_eq(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
        assert_eq!(check_complete(&bytes), request);
    }

    #[test]
    fn refusals_carry_their_reason_as_a_body() {
        let got = HttpReply::Forbidden.with_message("the exit refuses 10.0.0.1:80: policy");
        expect![[r#"
            HTTP/1.1 403 Forbidden
            Content-Type: text/plain; charset=utf-8
            Content-Length: 37
            Connection: close

            the exit refuses 10.0.0.1:80: policy
        "#]]
        .assert_eq(&String::from_utf8_lossy(&got).replace("\r\n", "\n"));
        assert_eq!(HttpReply::Established.with_message("x"), HttpReply::Established.as_bytes());
        for reply in HttpReply::ALL.into_iter().filter(|&r| r != HttpReply::Established) {
            let got = reply.with_message("why");
            assert!(got.starts_with(format!("HTTP/1.1 {} ", reply.status()).as_bytes()));
            assert!(got.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\nwhy\n"), "{reply:?}");
        }
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
            407 HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"tollway\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
            431 HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
            502 HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
            503 HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n
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
