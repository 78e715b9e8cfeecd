//! Small pieces of HTTP/1.1 syntax both directions use.

use std::mem::MaybeUninit;

/// Room for a head's `N` fields, left uninitialised: httparse writes only those it
/// finds. Why: an initialised array of empty fields is a memset per request before a
/// byte is parsed (2 KiB for a request's 64, 3.2 KiB for a response's 100).
pub const fn unset_fields<'b, const N: usize>() -> [MaybeUninit<httparse::Header<'b>>; N] {
    [const { MaybeUninit::uninit() }; N]
}

/// A `Content-Length` value: ASCII digits only (optional surrounding whitespace), at
/// most 18 of them (so it fits a `u64` with room to add).
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A response's `Content-Length`: one value, or a list of equal values (`7, 7`), which
/// RFC 9110 §8.6 lets a recipient read as that one value (hyper does).
pub fn content_length_list(value: &[u8]) -> Option<u64> {
    let mut values = value.split(|&b| b == b',').map(content_length);
    let first = values.next()??;
    values.all(|v| v == Some(first)).then_some(first)
}

/// Appends one `name: value` header line, the name lower-cased: what hyper writes on
/// the general path, so an app and a client see the same bytes whichever path served
/// them (names are case-insensitive: RFC 9110 §5.1).
pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend(name.iter().map(u8::to_ascii_lowercase));
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a `date` header with the current time, formatted at most once a second
/// per thread (as hyper does).
pub fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        header(out, b"date", c.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_line_lowercases_its_name_only() {
        let mut out = b"GET / HTTP/1.1\r\n".to_vec();
        header(&mut out, b"X-Forwarded-Host", b"Example.TEST");
        header(&mut out, b"date", b"Tue, 01 Dec 2026");
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nx-forwarded-host: Example.TEST\r\ndate: Tue, 01 Dec 2026\r\n"
        );
    }

    #[test]
    fn a_list_of_equal_lengths_is_one_length_and_unequal_ones_are_none() {
        assert_eq!(content_length_list(b"7, 7"), Some(7));
        assert_eq!(content_length_list(b"7"), Some(7));
        assert_eq!(content_length_list(b"7, 8"), None);
        assert_eq!(content_length_list(b"7,"), None);
        assert_eq!(content_length_list(b""), None);
    }

    #[test]
    fn content_length_takes_plain_digits_only() {
        assert_eq!(content_length(b" 42 "), Some(42));
        assert_eq!(content_length(b"0"), Some(0));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 2",
            b"0x10",
            b"1234567890123456789",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
