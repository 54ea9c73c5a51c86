//! An origin's response head, as the HTTP proxy relays it on a connection
//! the program keeps open (RFC 9112 §9.3): where the response's body ends
//! (§6.3), so the next request can follow it, and the head rewritten with
//! the proxy's own `Connection` in place of the origin's.
//!
//! The program's persistence is the proxy's: it keeps the connection when
//! the program asked for that and the response ends by its own framing,
//! and closes it after a response that only the origin's close ends. The
//! origin's own persistence (`ResponseHead::persistent`) decides only
//! whether the proxy sends the program's next request to the same host on
//! the same stream.

use crate::body::BodyLength;
use crate::http::{
    content_length, end_to_end, head_line, header_field, header_values, is_chunked, persistent, without_content_length,
};
use crate::limits::MAX_HTTP_RESPONSE_HEAD_BYTES;
use crate::ParseError;

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// By its framing: no body, `Content-Length`, or chunked.
    Framed(BodyLength),
    /// When the origin closes (RFC 9112 §6.3, rule 8): the program's
    /// connection must close after it too.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    pub body: ResponseBody,
    /// Whether the origin leaves its connection open for the next request
    /// (RFC 9112 §9.3: HTTP/1.1 unless `Connection` names `close`,
    /// HTTP/1.0 only if it names `keep-alive`).
    pub persistent: bool,
    /// The status line, as sent.
    status_line: Vec<u8>,
    /// The end-to-end header lines: without `Connection`, the fields it
    /// names, `Keep-Alive` and `Proxy-Connection`.
    headers: Vec<Vec<u8>>,
}

impl ResponseHead {
    /// 1xx but not 101: an interim response (`100 Continue`, `103 Early
    /// Hints`), passed on as it came; the final one follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// The head the program gets: the status line, the end-to-end
    /// headers, and `Connection: keep-alive` or `close`.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = self.status_line.clone();
        head.extend_from_slice(b"\r\n");
        for line in &self.headers {
            head.extend_from_slice(line);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(if keep_alive { b"Connection: keep-alive\r\n\r\n" } else { b"Connection: close\r\n\r\n" });
        head
    }
}

/// Parses the head of the response to a `method` request: `Ok((head,
/// bytes used))`, or `Incomplete` until its empty line has come. A head
/// longer than [`MAX_HTTP_RESPONSE_HEAD_BYTES`] is refused.
pub fn parse_response(buf: &[u8], method: &str) -> Result<(ResponseHead, usize), ParseError> {
    let mut pos = 0;
    let mut status = None;
    let mut lines = Vec::new();
    loop {
        let (line, next) = head_line(buf, pos, MAX_HTTP_RESPONSE_HEAD_BYTES, ParseError::ResponseHeadTooLarge)?;
        pos = next;
        let Some((code, status_line)) = status else {
            status = Some(parse_status_line(line)?);
            continue;
        };
        if !line.is_empty() {
            header_field(line, lines.len() + 2)?;
            lines.push(line);
            continue;
        }
        let body = body_of(method, code, &lines)?;
        let persistent = persistent(if status_line.starts_with(b"HTTP/1.1") { "HTTP/1.1" } else { "HTTP/1.0" }, &lines);
        let mut headers = end_to_end(lines);
        if body == ResponseBody::Framed(BodyLength::Chunked) {
            // As for a request (RFC 9112 §6.1): never both.
            headers = without_content_length(headers);
        }
        // Even after an HTTP/1.0 status line, the `Connection` line the
        // proxy adds says whether the connection persists.
        return Ok((ResponseHead { status: code, body, persistent, status_line: status_line.to_vec(), headers }, pos));
    }
}

/// `HTTP/1.x NNN reason`: the code, and the line itself.
fn parse_status_line(line: &[u8]) -> Result<(u16, &[u8]), ParseError> {
    match line.get(..9) {
        Some(b"HTTP/1.1 " | b"HTTP/1.0 ") => {}
        _ => return Err(ParseError::BadStatusLine("it does not start with HTTP/1.1 or HTTP/1.0 and a space")),
    }
    let code = match line.get(9..12) {
        Some(digits) if digits.iter().all(u8::is_ascii_digit) && line.get(12).is_none_or(|&b| b == b' ') => {
            digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'))
        }
        _ => return Err(ParseError::BadStatusLine("the status code is not three digits")),
    };
    if code < 100 {
        return Err(ParseError::BadStatusLine("the status code is below 100"));
    }
    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ParseError::BadStatusLine("a control character in the reason"));
    }
    Ok((code, line))
}

/// RFC 9112 §6.3's rules for a response, in order.
fn body_of(method: &str, status: u16, lines: &[&[u8]]) -> Result<ResponseBody, ParseError> {
    if status == 101 {
        // The connection is the new protocol's from here.
        return Ok(ResponseBody::UntilClose);
    }
    if method.eq_ignore_ascii_case("HEAD") || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(ResponseBody::Framed(BodyLength::Empty));
    }
    if header_values(lines, b"transfer-encoding").next().is_some() {
        return Ok(if is_chunked(lines) { ResponseBody::Framed(BodyLength::Chunked) } else { ResponseBody::UntilClose });
    }
    Ok(match content_length(lines)? {
        Some(n) => ResponseBody::Framed(BodyLength::Bytes(n)),
        None => ResponseBody::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str, method: &str) -> (ResponseHead, usize) {
        parse_response(head.as_bytes(), method).unwrap()
    }

    #[test]
    fn the_body_ends_where_rfc_9112_says() {
        let cases: [(&str, &str, ResponseBody); 10] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "GET", ResponseBody::Framed(BodyLength::Bytes(12))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "HEAD", ResponseBody::Framed(BodyLength::Empty)),
            ("HTTP/1.1 204 No Content\r\n\r\n", "DELETE", ResponseBody::Framed(BodyLength::Empty)),
            ("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "GET", ResponseBody::Framed(BodyLength::Empty)),
            ("HTTP/1.1 100 Continue\r\n\r\n", "POST", ResponseBody::Framed(BodyLength::Empty)),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "GET", ResponseBody::Framed(BodyLength::Chunked)),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n", "GET", ResponseBody::UntilClose),
            ("HTTP/1.0 200 OK\r\n\r\n", "GET", ResponseBody::UntilClose),
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "GET", ResponseBody::UntilClose),
            // A bare LF ends lines, as in requests.
            ("HTTP/1.1 404 Not Found\nContent-Length: 0\n\n", "GET", ResponseBody::Framed(BodyLength::Bytes(0))),
        ];
        for (head, method, want) in cases {
            let (got, used) = parsed(head, method);
            assert_eq!(got.body, want, "{head:?}");
            assert_eq!(used, head.len(), "{head:?}");
        }
    }

    #[test]
    fn the_program_gets_the_proxy_s_connection_and_not_the_origin_s() {
        let head = "HTTP/1.1 200 OK\r\nServer: s\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
                    Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\nbody";
        let (got, used) = parsed(head, "GET");
        assert_eq!(&head[used..], "body");
        assert_eq!(
            String::from_utf8(got.encode(true)).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: s\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        );
        let (got, _) = parsed("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", "GET");
        assert_eq!(String::from_utf8(got.encode(false)).unwrap(), "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
        assert!(parsed("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", "GET").0.is_interim());
        assert!(!parsed("HTTP/1.1 101 Switching Protocols\r\n\r\n", "GET").0.is_interim());
    }

    #[test]
    fn whether_the_origin_keeps_its_connection() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\nConnection: X-Hop, Close\r\nContent-Length: 0\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", true),
        ];
        for (head, persistent) in cases {
            assert_eq!(parsed(head, "GET").0.persistent, persistent, "{head:?}");
        }
    }

    #[test]
    fn incomplete_and_malformed_heads() {
        let whole = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse_response(&whole.as_bytes()[..cut], "GET").unwrap_err(), ParseError::Incomplete, "cut at {cut}");
        }
        let bad = |head: &str| parse_response(head.as_bytes(), "GET").unwrap_err();
        assert!(matches!(bad("HTTP/2 200 OK\r\n\r\n"), ParseError::BadStatusLine(_)));
        assert!(matches!(bad("HTTP/1.1 2000 OK\r\n\r\n"), ParseError::BadStatusLine(_)));
        assert!(matches!(bad("HTTP/1.1 099 Low\r\n\r\n"), ParseError::BadStatusLine(_)));
        assert!(matches!(bad("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"), ParseError::BadFraming(_)));
        assert!(matches!(bad("HTTP/1.1 200 OK\r\n folded\r\n\r\n"), ParseError::BadHeader { line: 2, .. }));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HTTP_RESPONSE_HEAD_BYTES));
        assert_eq!(bad(&huge), ParseError::ResponseHeadTooLarge);
        assert!(parse_response(b"HTTP/1.1 200\r\n\r\n", "GET").is_ok(), "the reason may be absent");
    }
}
