//! The proxy's own cookies in a request's `Cookie` header: the preview cookie (its
//! value must open the preview: `preview::PreviewAccess`) and the sticky cookies
//! (`cutover-slot-<service>`, see `split`).
//!
//! Both are Cutover's business, not the application's, so they are removed before the
//! request is forwarded. Reading is a byte scan of the header in place (no allocation);
//! only a request that actually carries one of them pays for rebuilding the header.

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use super::preview::PreviewAccess;
use super::split::STICKY_COOKIE_PREFIX;
use crate::domain::Slot;

/// What a request's cookies say to the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// The preview cookie is present and its value opens this service's preview (the
    /// secret or a valid token).
    pub preview: bool,
    /// The service's sticky cookie names this slot (unknown values are ignored).
    pub sticky: Option<Slot>,
    /// At least one of the proxy's cookies is present: strip before forwarding.
    pub ours: bool,
}

/// Looks for the preview cookie `preview_name` and the sticky cookies; the one of
/// `service` gives [`Scan::sticky`].
pub fn scan(
    headers: &HeaderMap,
    preview_name: &str,
    service: &str,
    access: &PreviewAccess,
) -> Scan {
    scan_values(
        headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes),
        preview_name,
        service,
        access,
    )
}

/// [`scan`] over raw `Cookie` header values (the fast path has no `HeaderMap`).
pub fn scan_values<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    preview_name: &str,
    service: &str,
    access: &PreviewAccess,
) -> Scan {
    let mut out = Scan::default();
    for value in values {
        for (name, val) in pairs(value) {
            if name == preview_name.as_bytes() {
                out.preview |= access.allows(service, val);
                out.ours = true;
            } else if let Some(rest) = name.strip_prefix(STICKY_COOKIE_PREFIX.as_bytes()) {
                out.ours = true;
                if rest == service.as_bytes() {
                    out.sticky = slot(val);
                }
            }
        }
    }
    out
}

/// Removes the preview cookie and every sticky cookie; the other cookies stay, joined
/// into one `Cookie` header (or none if nothing is left).
pub fn strip(headers: &mut HeaderMap, preview_name: &str) {
    let mut kept: Vec<u8> = Vec::new();
    kept_cookies(
        headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes),
        preview_name,
        &mut kept,
    );
    headers.remove(COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)) {
            headers.insert(COOKIE, v);
        }
    }
}

/// Appends to `kept` every cookie pair of `values` that is not the proxy's, joined by
/// `"; "` (nothing when none is left).
pub fn kept_cookies<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    preview_name: &str,
    kept: &mut Vec<u8>,
) {
    let start = kept.len();
    for value in values {
        for pair in value.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let name = pair
                .split(|&b| b == b'=')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if pair.is_empty()
                || name == preview_name.as_bytes()
                || name.starts_with(STICKY_COOKIE_PREFIX.as_bytes())
            {
                continue;
            }
            if kept.len() > start {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
}

/// `name=value` pairs of one `Cookie` header value, trimmed; a pair without `=` has an
/// empty value.
fn pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            return None;
        }
        Some(match pair.iter().position(|&b| b == b'=') {
            Some(i) => (pair[..i].trim_ascii(), pair[i + 1..].trim_ascii()),
            None => (pair, &pair[pair.len()..]),
        })
    })
}

/// `blue`/`green`, optionally quoted; anything else is `None`.
fn slot(value: &[u8]) -> Option<Slot> {
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    match value {
        b"blue" => Some(Slot::Blue),
        b"green" => Some(Slot::Green),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(COOKIE, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn access() -> PreviewAccess {
        PreviewAccess::with_secret("a-secret-of-some-length")
    }

    #[test]
    fn finds_the_preview_cookie_and_this_services_sticky_cookie_among_others() {
        let h = cookies(&[
            "a=1; cutover-slot-api=blue; cutover-preview=a-secret-of-some-length",
            "cutover-slot-web=\"green\"",
        ]);
        let s = scan(&h, "cutover-preview", "web", &access());
        assert_eq!(
            s,
            Scan {
                preview: true,
                sticky: Some(Slot::Green),
                ours: true
            }
        );
        let s = scan(&h, "cutover-preview", "api", &access());
        assert_eq!(s.sticky, Some(Slot::Blue));
        let s = scan(&h, "cutover-preview", "web", &PreviewAccess::default());
        assert!(
            !s.preview && s.ours,
            "without access the cookie is ignored, and stripped"
        );
        let wrong = cookies(&["cutover-preview=guess"]);
        let s = scan(&wrong, "cutover-preview", "web", &access());
        assert!(!s.preview && s.ours, "a wrong value opens nothing");
    }

    #[test]
    fn unknown_sticky_values_are_ignored_and_lookalike_names_are_not_ours() {
        let h = cookies(&["cutover-slot-web=purple; xcutover-preview=1; cutover-previewer=1"]);
        let s = scan(&h, "cutover-preview", "web", &access());
        assert_eq!(s.sticky, None);
        assert!(!s.preview);
        assert!(s.ours, "the sticky cookie is still ours to strip");
        assert_eq!(
            scan(
                &cookies(&["session=abc"]),
                "cutover-preview",
                "web",
                &access()
            ),
            Scan::default()
        );
    }

    #[test]
    fn strip_removes_only_the_proxys_cookies_and_joins_the_rest() {
        let mut h = cookies(&["a=1; cutover-preview=yes", "cutover-slot-web=green;b=2"]);
        strip(&mut h, "cutover-preview");
        assert_eq!(h.get_all(COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        let mut h = cookies(&["cutover-preview=1; cutover-slot-web=blue"]);
        strip(&mut h, "cutover-preview");
        assert!(!h.contains_key(COOKIE));
    }
}
