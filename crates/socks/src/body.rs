//! Where a forwarded request's body ends (RFC 9112 §6.3, §7.1), so the
//! front end sends the origin exactly one request: its head, its body and
//! nothing after. A program that pipelines a second request behind the
//! first would otherwise have it sent on raw, in the proxy's absolute
//! form and with its `Proxy-Authorization` (the proxy's own credentials),
//! to an origin that closes after the first response anyway. Dropped
//! here instead, it is one the program sees unanswered on a closed
//! connection, which HTTP/1.1 clients retry (RFC 9112 §9.3.2).
//!
//! Nothing is buffered: [`BodyEnd::take`] only counts how many of the
//! bytes it is shown still belong to the body, so the state is a few
//! words whatever the program sends.

/// How a request's body is delimited, from its framing headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No `Content-Length` and no `Transfer-Encoding`: no body.
    Empty,
    /// `Content-Length`: this many bytes.
    Bytes(u64),
    /// `Transfer-Encoding` ending in `chunked`: up to the last chunk and
    /// the trailer section.
    Chunked,
}

/// A chunked body that cannot be delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("malformed chunked body: a chunk size is not hexadecimal")]
    BadSize,
    #[error("malformed chunked body: a chunk size does not fit in 64 bits")]
    SizeTooLarge,
    #[error("malformed chunked body: a chunk's data is not followed by a line end")]
    MissingLineEnd,
}

/// Counts a body's bytes as they pass, to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyEnd {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `Content-Length`: bytes still to come.
    Bytes(u64),
    /// A chunk-size line: the hex digits so far (`digits` false until the
    /// first).
    Size { value: u64, digits: bool },
    /// The rest of a chunk-size line (extensions, CR), to its LF.
    SizeLine { value: u64 },
    /// A chunk's data: bytes still to come.
    Data(u64),
    /// The line end after a chunk's data (`cr`: its CR was seen).
    DataEnd { cr: bool },
    /// The start of a trailer line, or of the empty line that ends the body
    /// (`cr`: a CR was seen there).
    TrailerStart { cr: bool },
    /// A trailer field line, to its LF.
    TrailerLine,
    Done,
}

impl BodyEnd {
    pub fn new(length: BodyLength) -> BodyEnd {
        let state = match length {
            BodyLength::Empty | BodyLength::Bytes(0) => State::Done,
            BodyLength::Bytes(n) => State::Bytes(n),
            BodyLength::Chunked => State::Size { value: 0, digits: false },
        };
        BodyEnd { state }
    }

    /// Whether the body's last byte has passed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many of `bytes`, the next ones after those already taken, belong
    /// to the body: all of them until its end, then none. Lines end in CRLF
    /// or a bare LF, as in the head (`parse_http_request`).
    pub fn take(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let mut used = 0;
        while let Some(&b) = bytes.get(used) {
            // Each arm gives the next state and how many bytes it took: runs
            // of body data whole, the lines around them a byte at a time.
            let (next, took) = match self.state {
                State::Done => break,
                State::Bytes(n) | State::Data(n) => {
                    let run = n.min((bytes.len() - used) as u64);
                    let next = match (self.state, n - run) {
                        (State::Bytes(_), 0) => State::Done,
                        (State::Bytes(_), left) => State::Bytes(left),
                        (_, 0) => State::DataEnd { cr: false },
                        (_, left) => State::Data(left),
                    };
                    (next, run as usize)
                }
                State::Size { value, digits } => match (b as char).to_digit(16) {
                    Some(_) if value >> 60 != 0 => return Err(ChunkError::SizeTooLarge),
                    Some(d) => (State::Size { value: value << 4 | d as u64, digits: true }, 1),
                    // Extensions (`;name=value`, RFC 9112 §7.1.1) are the
                    // origin's to read; the line end is what counts here.
                    None if digits && matches!(b, b';' | b' ' | b'\t' | b'\r') => (State::SizeLine { value }, 1),
                    None if digits && b == b'\n' => (after_size_line(value), 1),
                    None => return Err(ChunkError::BadSize),
                },
                State::SizeLine { value } if b == b'\n' => (after_size_line(value), 1),
                State::SizeLine { value } => (State::SizeLine { value }, 1),
                State::DataEnd { cr: false } if b == b'\r' => (State::DataEnd { cr: true }, 1),
                State::DataEnd { .. } if b == b'\n' => (State::Size { value: 0, digits: false }, 1),
                State::DataEnd { .. } => return Err(ChunkError::MissingLineEnd),
                State::TrailerStart { cr: false } if b == b'\r' => (State::TrailerStart { cr: true }, 1),
                State::TrailerStart { .. } if b == b'\n' => (State::Done, 1),
                State::TrailerLine if b == b'\n' => (State::TrailerStart { cr: false }, 1),
                State::TrailerStart { .. } | State::TrailerLine => (State::TrailerLine, 1),
            };
            self.state = next;
            used += took;
        }
        Ok(used)
    }
}

/// After a chunk-size line: its data, or the trailer section after the
/// last chunk (size 0).
fn after_size_line(value: u64) -> State {
    if value == 0 {
        State::TrailerStart { cr: false }
    } else {
        State::Data(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's length in `bytes`, or `None` if it had not ended by
    /// their last byte.
    fn end_of(length: BodyLength, bytes: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut end = BodyEnd::new(length);
        let used = end.take(bytes)?;
        Ok(end.is_done().then_some(used))
    }

    #[test]
    fn content_length_and_empty_bodies_end_where_they_say() {
        assert_eq!(end_of(BodyLength::Empty, b"GET http://a/ HTTP/1.1\r\n\r\n"), Ok(Some(0)));
        assert_eq!(end_of(BodyLength::Bytes(0), b"xyz"), Ok(Some(0)));
        assert_eq!(end_of(BodyLength::Bytes(3), b"abcGET"), Ok(Some(3)));
        assert_eq!(end_of(BodyLength::Bytes(4), b"abc"), Ok(None));
    }

    #[test]
    fn chunked_bodies_end_after_the_last_chunk_and_the_trailers() {
        // (body, what follows it)
        let cases: [(&[u8], &[u8]); 5] = [
            (b"3\r\nabc\r\n0\r\n\r\n", b"GET http://next/"),
            // Extensions, upper-case hex, leading zeros, trailers.
            (b"00A;name=\"v\"\r\n0123456789\r\n0;x\r\nX-Sum: 1\r\n\r\n", b"rest"),
            // Bare LFs, as the head allows.
            (b"1\nz\n0\n\n", b"rest"),
            // Data that looks like a last chunk is data.
            (b"5\r\n0\r\n\r\n\r\n0\r\n\r\n", b""),
            (b"0\r\n\r\n", b"0\r\n\r\n"),
        ];
        for (body, after) in cases {
            let bytes = [body, after].concat();
            assert_eq!(end_of(BodyLength::Chunked, &bytes), Ok(Some(body.len())), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_body_split_anywhere_ends_at_the_same_byte() {
        let body = b"4;e=1\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\nGET http://next/ HTTP/1.1\r\n\r\n";
        let whole = end_of(BodyLength::Chunked, body).unwrap().unwrap();
        assert_eq!(&body[whole..whole + 4], b"GET ");
        for cut in 0..body.len() {
            let mut end = BodyEnd::new(BodyLength::Chunked);
            let first = end.take(&body[..cut]).unwrap();
            let second = end.take(&body[first..]).unwrap();
            assert!(end.is_done());
            assert_eq!(first + second, whole, "split at {cut}");
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        assert_eq!(end_of(BodyLength::Chunked, b"g\r\n"), Err(ChunkError::BadSize));
        assert_eq!(end_of(BodyLength::Chunked, b"\r\n"), Err(ChunkError::BadSize));
        assert_eq!(end_of(BodyLength::Chunked, b";ext\r\n"), Err(ChunkError::BadSize));
        assert_eq!(end_of(BodyLength::Chunked, b"2\r\nabc\r\n"), Err(ChunkError::MissingLineEnd));
        assert_eq!(end_of(BodyLength::Chunked, b"2\r\nab\rx"), Err(ChunkError::MissingLineEnd));
        assert_eq!(end_of(BodyLength::Chunked, b"10000000000000000\r\n"), Err(ChunkError::SizeTooLarge));
        assert_eq!(end_of(BodyLength::Chunked, b"ffffffffffffffff\r\n"), Ok(None));
    }
}
