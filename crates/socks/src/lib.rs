//! SOCKS5 and HTTP proxy parsing for the client front end (DESIGN §4):
//! one local port where any ordinary program asks for a tunnel to
//! `host:port` (or, with a plain-HTTP URL, for one request to be sent
//! there), names resolved at the exit so DNS does not leak.
//!
//! Pure, in the manner of mini-redis's frame parser: bytes in, values out.
//! No sockets, no async runtime, no clocks. The async driver (crates/net)
//! owns the connection and a read buffer, and calls in here:
//!
//! ```text
//! detect_protocol(buf)            first byte: 0x05 SOCKS5, a letter HTTP
//! SOCKS5:  parse_greeting(buf)    -> choose_method -> method_reply
//!          parse_auth(buf)        -> (check credentials) -> auth_reply
//!          parse_request(buf)     -> (connect) -> Reply::encode
//! HTTP:    parse_http_request(buf)-> (check, connect) -> HttpReply::as_bytes
//!                                    or ForwardRequest::origin_head,
//!          BodyEnd::take(bytes)   then its body, to the body's end
//! ```
//!
//! Every parser takes the bytes received so far and returns the value and
//! how many bytes it used, or [`ParseError::Incomplete`] when a valid
//! message could still follow (read more and call again with the longer
//! buffer), or another [`ParseError`] when no continuation could make the
//! bytes valid (answer, see [`ParseError::socks_reply_code`] and
//! [`ParseError::http_reply`], and close).
//!
//! **Invariants.** The parsers never panic on any input, never read past
//! the limits in [`limits`] (so the driver's buffer is bounded too) and
//! allocate at most a few hundred bytes per value. A valid message split
//! at any point is `Incomplete` until its last byte arrives and then
//! parses exactly as if it had arrived whole. Every value the parsers
//! return encodes back to bytes the parser accepts as the same value
//! (`fuzz/fuzz_targets/socks_parse.rs` checks both).

mod base64;
mod body;
mod credentials;
mod error;
mod http;
mod response;
mod socks5;
mod target;

pub use body::{BodyEnd, BodyLength, ChunkError};
pub use credentials::Credentials;
pub use error::{AddrError, DomainError, ParseError};
pub use http::{parse_http_request, ConnectRequest, ForwardRequest, HttpReply, HttpRequest};
pub use response::{parse_response, ResponseBody, ResponseHead};
pub use socks5::{
    auth_reply, choose_method, method_reply, parse_auth, parse_greeting, parse_reply,
    parse_request, AuthPolicy, Command, Greeting, Method, Reply, ReplyCode, Request,
};
pub use target::{DomainName, Host, Target};

/// Limits on everything a client can make the parsers hold.
pub mod limits {
    /// A SOCKS5 domain name's length is one octet (RFC 1928 §5); the same
    /// limit applies to names in HTTP targets.
    pub const MAX_DOMAIN_BYTES: usize = 255;
    /// One label of a domain name (RFC 1035 §2.3.4): longer ones can never
    /// resolve, so they are rejected at the edge.
    pub const MAX_DOMAIN_LABEL_BYTES: usize = 63;
    /// RFC 1929's ULEN is one octet. HTTP Basic credentials are held to the
    /// same limit, so one configured user works over both protocols.
    pub const MAX_USERNAME_BYTES: usize = 255;
    /// RFC 1929's PLEN is one octet; as [`MAX_USERNAME_BYTES`].
    pub const MAX_PASSWORD_BYTES: usize = 255;
    /// An HTTP request head, request line to the empty line included. A
    /// CONNECT head is a few hundred bytes; a forwarded request's carries
    /// the program's headers, and 8 KiB is the usual web server's limit
    /// for those, so a longer head would be refused further on anyway.
    pub const MAX_HTTP_HEAD_BYTES: usize = 8 * 1024;
    /// An origin's response head, as the HTTP proxy reads it to find the
    /// body's end: cookies make these longer than requests; browsers
    /// take up to 256 KiB, common servers send under 16 KiB.
    pub const MAX_HTTP_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
    /// The longest SOCKS5 greeting: VER, NMETHODS, 255 methods.
    pub const MAX_GREETING_BYTES: usize = 2 + 255;
    /// The longest RFC 1929 request: VER, ULEN, UNAME, PLEN, PASSWD.
    pub const MAX_AUTH_BYTES: usize = 1 + 1 + MAX_USERNAME_BYTES + 1 + MAX_PASSWORD_BYTES;
    /// The longest SOCKS5 request or reply: VER, CMD, RSV, ATYP, a
    /// length-prefixed domain, port.
    pub const MAX_REQUEST_BYTES: usize = 4 + 1 + MAX_DOMAIN_BYTES + 2;
}

/// What a fresh client speaks, from its first byte, so one listening port
/// serves both protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The first byte is SOCKS version 5.
    Socks5,
    /// The first byte is an ASCII letter: an HTTP method, for
    /// [`parse_http_request`].
    Http,
}

/// Tells SOCKS5 from HTTP by the first byte. `Incomplete` on an empty
/// buffer; SOCKS4 and anything else are rejected with a message saying
/// what this port speaks.
pub fn detect_protocol(buf: &[u8]) -> Result<Protocol, ParseError> {
    match buf.first() {
        None => Err(ParseError::Incomplete),
        Some(&socks5::SOCKS_VERSION) => Ok(Protocol::Socks5),
        // SOCKS4 and 4a: VER = 4. Said by name, it is the common mistake.
        Some(&4) => Err(ParseError::UnsupportedSocksVersion(4)),
        Some(b) if b.is_ascii_alphabetic() => Ok(Protocol::Http),
        Some(&b) => Err(ParseError::UnknownProtocol(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_protocol_by_the_first_byte() {
        let cases: [(&[u8], Result<Protocol, ParseError>); 9] = [
            (b"", Err(ParseError::Incomplete)),
            (b"\x05", Ok(Protocol::Socks5)),
            (b"\x05\x01\x00", Ok(Protocol::Socks5)),
            (b"CONNECT example.com:443 HTTP/1.1\r\n", Ok(Protocol::Http)),
            (b"G", Ok(Protocol::Http)),
            (b"connect", Ok(Protocol::Http)),
            (
                b"\x04\x01\x00\x50",
                Err(ParseError::UnsupportedSocksVersion(4)),
            ),
            // A TLS ClientHello: the client thinks this is an HTTPS proxy.
            (b"\x16\x03\x01", Err(ParseError::UnknownProtocol(0x16))),
            (b" CONNECT", Err(ParseError::UnknownProtocol(b' '))),
        ];
        for (input, want) in cases {
            assert_eq!(detect_protocol(input), want, "{input:?}");
        }
        for b in 0..=255u8 {
            let got = detect_protocol(&[b]);
            match got {
                Ok(Protocol::Socks5) => assert_eq!(b, 5),
                Ok(Protocol::Http) => assert!(b.is_ascii_alphabetic()),
                Err(e) => assert!(!e.is_incomplete()),
            }
        }
    }

    #[test]
    fn limits_match_the_wire_formats() {
        assert_eq!(limits::MAX_GREETING_BYTES, 257);
        assert_eq!(limits::MAX_AUTH_BYTES, 513);
        assert_eq!(limits::MAX_REQUEST_BYTES, 262);
        assert_eq!(limits::MAX_HTTP_HEAD_BYTES, 8192);
    }
}
