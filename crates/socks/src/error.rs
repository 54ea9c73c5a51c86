//! Why bytes were refused. `Incomplete` is not a refusal: it asks for more
//! bytes. Every other variant is final, and its message says what the
//! person configuring the client can change.

use crate::http::HttpReply;
use crate::limits::{MAX_DOMAIN_BYTES, MAX_DOMAIN_LABEL_BYTES, MAX_HTTP_HEAD_BYTES, MAX_HTTP_RESPONSE_HEAD_BYTES};
use crate::socks5::ReplyCode;

/// A message from a client could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// More bytes are needed; read more and parse the longer buffer.
    #[error("incomplete message: more bytes are needed")]
    Incomplete,

    // ---- protocol detection -------------------------------------------
    #[error(
        "unrecognised protocol (first byte {0:#04x}): this port speaks SOCKS5 and HTTP, \
         not TLS or SOCKS4; configure the client to use a SOCKS5 or an HTTP proxy"
    )]
    UnknownProtocol(u8),

    // ---- SOCKS5 (RFC 1928) and username/password (RFC 1929) ------------
    #[error("SOCKS version {0} is not supported: configure the client for SOCKS5")]
    UnsupportedSocksVersion(u8),
    #[error("the SOCKS5 greeting offers no authentication methods")]
    NoMethods,
    #[error(
        "username/password sub-negotiation version {0} is not supported (RFC 1929 is version 1)"
    )]
    UnsupportedAuthVersion(u8),
    #[error("SOCKS5 command {0:#04x} does not exist (CONNECT is 0x01)")]
    UnknownCommand(u8),
    #[error("the reserved byte of a SOCKS5 request or reply must be 0x00, got {0:#04x}")]
    NonZeroReserved(u8),
    #[error(
        "SOCKS5 address type {0:#04x} does not exist (IPv4 is 0x01, a domain name 0x03, IPv6 0x04)"
    )]
    UnsupportedAddressType(u8),
    #[error("SOCKS5 reply code {0:#04x} does not exist")]
    UnknownReplyCode(u8),
    #[error("bad destination host name: {0}")]
    InvalidDomain(#[from] DomainError),

    // ---- credentials, both protocols ----------------------------------
    #[error("the {field} is not valid UTF-8")]
    CredentialsNotUtf8 { field: &'static str },
    #[error("the {field} is {len} bytes; the limit is {limit}")]
    CredentialsTooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },

    // ---- HTTP proxy requests (RFC 9110 §9.3.6, RFC 9112) ----------------
    #[error("HTTP request header too large: the request head exceeds {MAX_HTTP_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// A request for the proxy itself (`GET / HTTP/1.1`): a program was
    /// pointed at it as a web server.
    #[error(
        "not a proxy request: this port is an HTTP and SOCKS5 proxy; send `CONNECT host:port` or a URL in full \
         (`GET http://example.com/ HTTP/1.1`), i.e. set it as the program's proxy"
    )]
    NotProxyRequest,
    #[error("bad URL in the request line: {0}")]
    BadUrl(&'static str),
    #[error("bad host in the URL: {0}")]
    BadUrlHost(#[source] AddrError),
    #[error("malformed HTTP request line: {0}")]
    BadRequestLine(&'static str),
    #[error("unsupported HTTP version: expected HTTP/1.1 or HTTP/1.0")]
    UnsupportedHttpVersion,
    #[error("bad CONNECT target: {0}")]
    BadAuthority(#[source] AddrError),
    #[error("malformed HTTP header on line {line}: {reason}")]
    BadHeader { line: usize, reason: &'static str },
    /// A forwarded request, or its response, whose body's end cannot be
    /// told.
    #[error("bad body framing: {0}")]
    BadFraming(&'static str),

    // ---- origins' responses to forwarded requests (RFC 9112 §4) ---------
    #[error("the origin's response head exceeds {MAX_HTTP_RESPONSE_HEAD_BYTES} bytes")]
    ResponseHeadTooLarge,
    #[error("malformed status line in the origin's response: {0}")]
    BadStatusLine(&'static str),
    #[error("more than one Proxy-Authorization header")]
    DuplicateProxyAuthorization,
    #[error("Proxy-Authorization uses a scheme other than Basic; this proxy accepts only Basic credentials")]
    UnsupportedAuthScheme,
    #[error("malformed Proxy-Authorization Basic credentials: {0}")]
    BadBasicCredentials(&'static str),
}

impl ParseError {
    pub fn is_incomplete(&self) -> bool {
        matches!(self, ParseError::Incomplete)
    }

    /// The SOCKS5 reply to send before closing when [`crate::parse_request`]
    /// refused a request (RFC 1928 §6). `None` where there is nothing to
    /// answer: more bytes are needed, or the client does not speak SOCKS5
    /// version 5 at all.
    pub fn socks_reply_code(&self) -> Option<ReplyCode> {
        match self {
            ParseError::UnknownCommand(_) => Some(ReplyCode::CommandNotSupported),
            ParseError::UnsupportedAddressType(_) => Some(ReplyCode::AddressTypeNotSupported),
            ParseError::InvalidDomain(_) | ParseError::NonZeroReserved(_) => {
                Some(ReplyCode::GeneralFailure)
            }
            _ => None,
        }
    }

    /// What to answer before closing when [`crate::detect_protocol`] or
    /// [`crate::parse_greeting`] refused a client's first message, so that
    /// the program can say why rather than that the proxy closed: a SOCKS4
    /// client gets its protocol's "request rejected" (VN 0, CD 91), and a
    /// SOCKS5 greeting that offers no method "no acceptable methods" (RFC
    /// 1928 §3). `None` for bytes of neither protocol.
    pub fn greeting_reply(&self) -> Option<&'static [u8]> {
        match self {
            ParseError::UnsupportedSocksVersion(4) => Some(&[0, 91, 0, 0, 0, 0, 0, 0]),
            ParseError::NoMethods => Some(&[5, 0xff]),
            _ => None,
        }
    }

    /// The HTTP reply to send before closing when
    /// [`crate::parse_http_request`] refused a request head. `None` while
    /// more bytes are needed, or when the bytes are not HTTP.
    pub fn http_reply(&self) -> Option<HttpReply> {
        match self {
            ParseError::Incomplete
            | ParseError::UnknownProtocol(_)
            | ParseError::UnsupportedSocksVersion(_)
            | ParseError::NoMethods
            | ParseError::UnsupportedAuthVersion(_)
            | ParseError::UnknownCommand(_)
            | ParseError::NonZeroReserved(_)
            | ParseError::UnsupportedAddressType(_)
            | ParseError::UnknownReplyCode(_) => None,
            // Credentials this proxy could never accept: ask for others.
            ParseError::UnsupportedAuthScheme
            | ParseError::CredentialsNotUtf8 { .. }
            | ParseError::CredentialsTooLong { .. } => Some(HttpReply::ProxyAuthRequired),
            ParseError::HeadTooLarge => Some(HttpReply::HeadTooLarge),
            ParseError::InvalidDomain(_)
            | ParseError::BadRequestLine(_)
            | ParseError::UnsupportedHttpVersion
            | ParseError::BadAuthority(_)
            | ParseError::NotProxyRequest
            | ParseError::BadUrl(_)
            | ParseError::BadUrlHost(_)
            | ParseError::BadHeader { .. }
            | ParseError::DuplicateProxyAuthorization
            | ParseError::BadFraming(_)
            | ParseError::BadBasicCredentials(_) => Some(HttpReply::BadRequest),
            ParseError::ResponseHeadTooLarge | ParseError::BadStatusLine(_) => Some(HttpReply::BadGateway),
        }
    }
}

/// A host name that cannot be a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the host name is empty")]
    Empty,
    #[error("the host name is {0} bytes; the limit is {MAX_DOMAIN_BYTES}")]
    TooLong(usize),
    #[error(
        "byte {byte:#04x} at offset {at} is not allowed in a host name \
         (letters, digits, '-', '_' and '.' only; write international names in punycode)"
    )]
    BadByte { byte: u8, at: usize },
    #[error("the host name has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    #[error("a label of the host name is {0} bytes; the limit is {MAX_DOMAIN_LABEL_BYTES}")]
    LabelTooLong(usize),
    #[error("the host name is an IP address; use Host::Ip for it")]
    IpLiteral,
}

/// A `host:port` string that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("missing port: write host:port, e.g. example.com:443 or [2001:db8::1]:443")]
    MissingPort,
    #[error("a URL is not a host:port: write e.g. example.com:443")]
    Url,
    #[error("the port is not a number from 0 to 65535")]
    BadPort,
    #[error("an IPv6 address needs brackets: [2001:db8::1]:443")]
    UnbracketedIpv6,
    #[error("the text in brackets is not an IPv6 address")]
    BadIpv6,
    #[error("{0}")]
    Domain(#[from] DomainError),
}
