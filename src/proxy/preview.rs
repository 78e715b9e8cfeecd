//! Who may reach a preview slot by header or cookie.
//!
//! A preview slot runs a release that has not passed its checks yet (before the
//! switch) or the previous one (after it), so reaching it is a privilege, not a
//! routing hint: preview by header or cookie is off unless `[proxy.preview] enabled`,
//! and then the header or cookie value must be the configured secret, or a token
//! signed with it that names the service and has not expired. Tokens are what
//! `cutover preview-url SERVICE` prints, so the secret itself need not be handed to
//! a tester's browser.
//!
//! Token: `v1.<expires, Unix seconds>.<hex HMAC-SHA256(secret, "cutover-preview:v1:<service>:<expires>")>`.
//! Both comparisons are constant-time.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The proxy's view of `[proxy.preview]`.
#[derive(Debug, Clone, Default)]
pub struct PreviewAccess {
    /// Preview by header or cookie is on.
    pub enabled: bool,
    /// A non-loopback preview listener was allowed; its requests need the secret too.
    pub public_listen: bool,
    secret: Option<Arc<[u8]>>,
}

impl PreviewAccess {
    pub fn from_config(c: &crate::config::PreviewConfig) -> Self {
        PreviewAccess {
            enabled: c.enabled,
            public_listen: c.public_listen,
            secret: c.secret.as_ref().map(|s| Arc::from(s.as_bytes())),
        }
    }

    /// Preview by header or cookie, on, with `secret`.
    pub fn with_secret(secret: &str) -> Self {
        PreviewAccess {
            enabled: true,
            public_listen: false,
            secret: Some(Arc::from(secret.as_bytes())),
        }
    }

    /// Whether `value` (of the preview header or cookie) opens `service`'s preview.
    pub fn allows(&self, service: &str, value: &[u8]) -> bool {
        let Some(secret) = &self.secret else {
            return false;
        };
        if constant_time_eq(value.trim_ascii(), secret) {
            return true;
        }
        verify(secret, service, value.trim_ascii(), unix_now())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(secret: &[u8], service: &str, expires: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("cutover-preview:v1:{service}:{expires}").as_bytes());
    mac
}

/// A token for `service`'s preview, valid until `expires` (Unix seconds).
pub fn sign(secret: &str, service: &str, expires: u64) -> String {
    let tag = mac(secret.as_bytes(), service, expires)
        .finalize()
        .into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1.{expires}.{hex}")
}

/// Whether `token` is a token for `service`, signed with `secret`, unexpired at `now`.
pub fn verify(secret: &[u8], service: &str, token: &[u8], now: u64) -> bool {
    let Ok(token) = std::str::from_utf8(token) else {
        return false;
    };
    let mut parts = token.splitn(3, '.');
    let (Some("v1"), Some(expires), Some(hex)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    if expires < now || hex.len() != 64 {
        return false;
    }
    let mut tag = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        match std::str::from_utf8(pair)
            .ok()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
        {
            Some(b) => tag[i] = b,
            None => return false,
        }
    }
    mac(secret, service, expires).verify_slice(&tag).is_ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-secret-of-some-length";

    #[test]
    fn a_token_opens_its_service_until_it_expires_and_nothing_else() {
        let token = sign(SECRET, "web", 2_000);
        assert!(verify(SECRET.as_bytes(), "web", token.as_bytes(), 1_999));
        assert!(verify(SECRET.as_bytes(), "web", token.as_bytes(), 2_000));
        assert!(
            !verify(SECRET.as_bytes(), "web", token.as_bytes(), 2_001),
            "expired"
        );
        assert!(
            !verify(SECRET.as_bytes(), "api", token.as_bytes(), 1_000),
            "other service"
        );
        assert!(
            !verify(b"another-secret-xx", "web", token.as_bytes(), 1_000),
            "other secret"
        );
        let longer = token.replacen("v1.2000.", "v1.9999.", 1);
        assert!(
            !verify(SECRET.as_bytes(), "web", longer.as_bytes(), 1_000),
            "extended"
        );
        for junk in ["", "v1", "v1.x.y", "v2.2000.00", "1", "v1.2000.zz"] {
            assert!(
                !verify(SECRET.as_bytes(), "web", junk.as_bytes(), 1_000),
                "{junk}"
            );
        }
    }

    #[test]
    fn preview_needs_the_secret_or_a_token_and_is_closed_without_one() {
        let access = PreviewAccess::with_secret(SECRET);
        assert!(access.allows("web", SECRET.as_bytes()));
        assert!(!access.allows("web", b"1"));
        assert!(!access.allows("web", b""));
        let token = sign(SECRET, "web", unix_now() + 60);
        assert!(access.allows("web", token.as_bytes()));
        assert!(!PreviewAccess::default().allows("web", SECRET.as_bytes()));
    }
}
