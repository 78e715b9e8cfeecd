//! A Server-Sent Events reader for the client side of `GET /api/v1/events`.
//!
//! Written by hand because it is about forty lines of the WHATWG format and the crates
//! that do it pull in a parser-combinator stack for no gain here. It accepts what the
//! daemon sends (and what the standard allows, but for bare-CR line ends): `field:
//! value` lines, `:` comments (keep-alives), and a blank line that dispatches the
//! message. A line longer than [`MAX_LINE`] is an error rather than unbounded memory.

/// One dispatched message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// The longest line accepted (an event's JSON is a few hundred bytes; a check's
/// captured output at most a few KiB).
pub const MAX_LINE: usize = 1 << 20;

/// Feeds bytes in, takes messages out.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    pending: SseMessage,
    has_data: bool,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<SseMessage>, String> {
        loop {
            let Some(end) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_LINE {
                    return Err(format!("an event-stream line is over {MAX_LINE} bytes"));
                }
                return Ok(None);
            };
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if self.has_data {
                    self.has_data = false;
                    return Ok(Some(std::mem::take(&mut self.pending)));
                }
                // A blank line without data dispatches nothing and resets the fields.
                self.pending = SseMessage::default();
                continue;
            }
            let line = String::from_utf8_lossy(&line);
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.pending.data.push('\n');
                    }
                    self.pending.data.push_str(value);
                    self.has_data = true;
                }
                "id" if !value.contains('\0') => self.pending.id = Some(value.to_string()),
                "event" => self.pending.event = Some(value.to_string()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &mut SseParser) -> Vec<SseMessage> {
        let mut out = Vec::new();
        while let Some(m) = p.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn messages_split_across_chunks_come_out_whole_and_in_order() {
        let stream = b": keep-alive\n\nid: 7\nevent: phase\ndata: {\"a\":1}\n\nid: 8\r\ndata: x\r\ndata: y\r\n\r\n";
        for cut in 0..stream.len() {
            let mut p = SseParser::default();
            p.feed(&stream[..cut]);
            let mut got = all(&mut p);
            p.feed(&stream[cut..]);
            got.extend(all(&mut p));
            assert_eq!(
                got,
                vec![
                    SseMessage {
                        id: Some("7".into()),
                        event: Some("phase".into()),
                        data: "{\"a\":1}".into()
                    },
                    SseMessage {
                        id: Some("8".into()),
                        event: None,
                        data: "x\ny".into()
                    },
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_message_without_its_blank_line_is_not_dispatched() {
        let mut p = SseParser::default();
        p.feed(b"id: 1\ndata: half\n");
        assert_eq!(p.next_message().unwrap(), None);
    }

    #[test]
    fn an_endless_line_is_an_error() {
        let mut p = SseParser::default();
        p.feed(&vec![b'a'; MAX_LINE + 1]);
        assert!(p.next_message().is_err());
    }
}
