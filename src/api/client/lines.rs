//! A streamed answer read one line at a time (`cutover logs --follow` reads the
//! daemon's newline-delimited JSON this way).

use http_body_util::BodyExt;

use super::ClientError;

/// Longest line kept; a longer one is cut (a runaway log line must not grow memory).
const MAX_LINE: usize = 64 * 1024;

pub struct LineStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl LineStream {
    pub(super) fn new(body: hyper::body::Incoming) -> Self {
        Self {
            body,
            buf: Vec::new(),
        }
    }

    /// The next line without its newline; `Ok(None)` when the daemon ended the answer.
    pub async fn next(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).take(i).collect();
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            match self.body.frame().await {
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    let rest = std::mem::take(&mut self.buf);
                    return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
                }
                Some(Err(e)) => return Err(ClientError::Protocol(format!("stream: {e}"))),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.buf.extend_from_slice(data);
                        if self.buf.len() > MAX_LINE && !self.buf.contains(&b'\n') {
                            self.buf.truncate(MAX_LINE);
                            self.buf.push(b'\n');
                        }
                    }
                }
            }
        }
    }
}
