//! One exchange with HAProxy's runtime API: connect, send one line, read until HAProxy
//! closes (the non-interactive mode answers one command line per connection).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::AdminAddr;
use crate::router::RouterError;

/// Largest answer read (a `show stat` of a big configuration is a few hundred KiB).
const MAX_ANSWER: u64 = 8 * 1024 * 1024;

pub(super) async fn exchange(
    admin: &AdminAddr,
    command: &str,
    timeout: Duration,
) -> Result<String, RouterError> {
    let io = async {
        match admin {
            AdminAddr::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await?;
                talk(s, command).await
            }
            AdminAddr::Tcp(endpoint) => {
                let s = endpoint.connect().await?;
                talk(s, command).await
            }
        }
    };
    match tokio::time::timeout(timeout, io).await {
        Ok(Ok(text)) => Ok(text.trim().to_string()),
        Ok(Err(e)) => Err(RouterError::Unreachable(format!(
            "haproxy runtime API at {admin}: {e} (is HAProxy running with `stats socket ... level admin` there?)"
        ))),
        Err(_) => Err(RouterError::Unreachable(format!(
            "haproxy runtime API at {admin}: no answer to `{command}` within {timeout:?}"
        ))),
    }
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    command: &str,
) -> std::io::Result<String> {
    s.write_all(format!("{command}\n").as_bytes()).await?;
    s.flush().await?;
    let mut out = Vec::new();
    (&mut s).take(MAX_ANSWER).read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
