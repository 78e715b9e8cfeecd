//! Finding where a `Transfer-Encoding: chunked` body ends, without decoding it.
//!
//! The fast path passes a chunked response through byte for byte (the client speaks
//! HTTP/1.1 too), so all it needs is the position of the end of the message: after the
//! last chunk (`0`), the optional trailer fields and the final empty line. Framing is
//! checked strictly (RFC 9112 §7.1): CRLF line ends, hex sizes, nothing after a
//! chunk's data but CRLF. A malformed body is the upstream's failure.
//!
//! HTTP/2 streams sent upstream over HTTP/1.1 (`exchange`) need the data and the
//! trailer fields themselves: the same scanner says where each chunk's data and each
//! trailer line lie ([`ChunkedEnd::feed_data`]), so decoding and finding the end can
//! never disagree.

/// Largest chunk size accepted (a larger one is treated as malformed).
const MAX_CHUNK: u64 = 1 << 48;
/// Longest chunk-size line or trailer line accepted, in bytes.
const MAX_LINE: u32 = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size {
        value: u64,
        digits: u32,
    },
    /// After the size: extensions until CR.
    Ext {
        value: u64,
        len: u32,
    },
    /// CR seen after the size line; LF next.
    SizeLf {
        value: u64,
    },
    /// Inside a chunk's data: bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerLine {
        len: u32,
    },
    TrailerLf,
    /// CR of the final empty line seen; LF ends the message.
    EndLf,
    Done,
}

/// The body does not follow the chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// What a range of bytes [`ChunkedEnd::feed_data`] reports is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Chunk data: the body once its framing is taken away.
    Data,
    /// Trailer field lines, each with its CRLF (the final empty line excluded).
    Trailer,
}

/// Tracks one chunked body across the reads it arrives in.
#[derive(Debug, Clone)]
pub struct ChunkedEnd {
    state: State,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl ChunkedEnd {
    /// Feeds the next bytes of the body. `Ok(Some(n))`: the message ends after the
    /// first `n` bytes of `bytes` (anything after is not part of it); `Ok(None)`: all
    /// of `bytes` belongs to the body and more is to come.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        self.feed_data(bytes, |_, _| {})
    }

    /// As [`feed`](Self::feed), and calls `part` with each range of `bytes` that is
    /// chunk data or trailer lines ([`Part`]), in order.
    pub fn feed_data(
        &mut self,
        bytes: &[u8],
        mut part: impl FnMut(Part, std::ops::Range<usize>),
    ) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        // Where the trailer lines seen in this call began (reported when they end).
        let mut trailer_from = None;
        while i < bytes.len() {
            if let State::Data(left) = self.state {
                let take = (bytes.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                part(Part::Data, i..i + take);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            let b = bytes[i];
            let trailer = match self.state {
                State::TrailerStart => b != b'\r',
                State::TrailerLine { .. } | State::TrailerLf => true,
                _ => false,
            };
            match (trailer, trailer_from) {
                (true, None) => trailer_from = Some(i),
                (false, Some(from)) => {
                    part(Part::Trailer, from..i);
                    trailer_from = None;
                }
                _ => {}
            }
            i += 1;
            self.state = match (self.state, b) {
                (State::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                    let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                    let value = value * 16 + d;
                    if value > MAX_CHUNK {
                        return Err(Malformed);
                    }
                    State::Size {
                        value,
                        digits: digits + 1,
                    }
                }
                (State::Size { value, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                    State::Ext { value, len: 0 }
                }
                (State::Size { value, digits }, b'\r') if digits > 0 => State::SizeLf { value },
                (State::Ext { value, .. }, b'\r') => State::SizeLf { value },
                (State::Ext { value, len }, _) if b != b'\n' && len < MAX_LINE => State::Ext {
                    value,
                    len: len + 1,
                },
                (State::SizeLf { value: 0 }, b'\n') => State::TrailerStart,
                (State::SizeLf { value }, b'\n') => State::Data(value),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size {
                    value: 0,
                    digits: 0,
                },
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart, _) if b != b'\n' => State::TrailerLine { len: 1 },
                (State::TrailerLine { .. }, b'\r') => State::TrailerLf,
                (State::TrailerLine { len }, _) if b != b'\n' && len < MAX_LINE => {
                    State::TrailerLine { len: len + 1 }
                }
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Some(i));
                }
                _ => return Err(Malformed),
            };
        }
        if let Some(from) = trailer_from {
            part(Part::Trailer, from..bytes.len());
        }
        Ok(None)
    }

    /// Whether the whole message has been seen.
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` split at every position into two reads; the end must be found at
    /// the same place each time.
    fn end_of(body: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut whole = ChunkedEnd::default();
        let expected = whole.feed(body);
        for cut in 0..body.len() {
            let mut c = ChunkedEnd::default();
            let split = match c.feed(&body[..cut]) {
                Ok(Some(n)) => Ok(Some(n)),
                Ok(None) => c.feed(&body[cut..]).map(|r| r.map(|n| n + cut)),
                Err(e) => Err(e),
            };
            assert_eq!(
                split,
                expected,
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(body)
            );
        }
        expected
    }

    #[test]
    fn finds_the_end_of_well_formed_bodies_however_they_are_split() {
        let cases: [(&[u8], usize); 5] = [
            (b"0\r\n\r\n", 5),
            (b"5\r\nhello\r\n0\r\n\r\n", 15),
            (b"5;name=v\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n", 37),
            (b"1\r\nx\r\n0\r\nExpires: never\r\nX-A: b\r\n\r\n", 35),
            (b"000\r\n\r\n", 7),
        ];
        for (body, end) in cases {
            assert_eq!(
                end_of(body),
                Ok(Some(end)),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_data_and_trailer_ranges_are_the_body_without_its_framing() {
        let body = b"5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-A: b\r\nX-B: c\r\n\r\nnext";
        for cut in 0..body.len() {
            let mut c = ChunkedEnd::default();
            let mut got = Vec::new();
            let mut trailers = Vec::new();
            let mut end = None;
            let mut offset = 0;
            for piece in [&body[..cut], &body[cut..]] {
                let r = c.feed_data(piece, |p, r| match p {
                    Part::Data => got.extend_from_slice(&piece[r]),
                    Part::Trailer => trailers.extend_from_slice(&piece[r]),
                });
                if let Some(n) = r.unwrap() {
                    end = Some(offset + n);
                    break;
                }
                offset += piece.len();
            }
            assert_eq!(got, b"hello0123456789", "cut at {cut}");
            assert_eq!(trailers, b"X-A: b\r\nX-B: c\r\n", "cut at {cut}");
            assert_eq!(end, Some(body.len() - 4), "cut at {cut}");
        }
    }

    #[test]
    fn bytes_after_the_end_are_not_part_of_the_message() {
        let mut c = ChunkedEnd::default();
        assert_eq!(c.feed(b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK"), Ok(Some(12)));
        assert!(c.is_done());
    }

    #[test]
    fn an_unfinished_body_asks_for_more() {
        let mut c = ChunkedEnd::default();
        assert_eq!(c.feed(b"10\r\n0123456789"), Ok(None));
        assert_eq!(c.feed(b"abcdef\r\n"), Ok(None));
        assert!(!c.is_done());
        assert_eq!(c.feed(b"0\r\n\r\n"), Ok(Some(5)));
    }

    #[test]
    fn malformed_framing_is_refused() {
        let bad: [&[u8]; 7] = [
            b"x\r\n",                 // not hex
            b"\r\n",                  // no size
            b"5\nhello\r\n",          // bare LF after the size
            b"2\r\nabc\r\n",          // more data than announced
            b"2\r\nab\n",             // bare LF after the data
            b"fffffffffffffffff\r\n", // absurd size
            b"0\r\n\n",               // bare LF at the end
        ];
        for body in bad {
            assert_eq!(
                ChunkedEnd::default().feed(body),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
