//! Just enough of X.509 (RFC 5280) to learn what a certificate is for and until when:
//! the subject's common name, the `subjectAltName` DNS names and `notAfter`.
//!
//! Why hand-written: the proxy needs three fields, and a full X.509 crate brings a
//! parser-combinator stack and a date library for them. rustls (through webpki)
//! already validates what a client will see; this reader only labels certificates for
//! SNI selection, `cutover status` and `/metrics`. It is a pure function over bytes;
//! anything it does not understand is an error naming what, never a panic.

/// What the proxy reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// `subjectAltName` DNS names, lower-cased (`*.example.com` kept as written).
    pub dns_names: Vec<String>,
    /// `notAfter` as seconds since the Unix epoch.
    pub not_after: i64,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const EXPLICIT_0: u8 = 0xa0;
const EXPLICIT_3: u8 = 0xa3;
const DNS_NAME: u8 = 0x82;
/// 2.5.4.3 commonName
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17 subjectAltName
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: tag and contents; `rest` is what follows it.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
    rest: &'a [u8],
}

fn tlv(input: &[u8]) -> Result<Tlv<'_>, String> {
    let (&tag, after) = input.split_first().ok_or("truncated element")?;
    let (&first, after) = after.split_first().ok_or("truncated length")?;
    let (len, after) = if first < 0x80 {
        (first as usize, after)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || after.len() < n {
            return Err("unsupported length".into());
        }
        let len = after[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &after[n..])
    };
    if after.len() < len {
        return Err("element longer than its input".into());
    }
    Ok(Tlv {
        tag,
        body: &after[..len],
        rest: &after[len..],
    })
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<Tlv<'a>, String> {
    let t = tlv(input)?;
    if t.tag != tag {
        return Err(format!(
            "expected {what} (tag {tag:#04x}), found tag {:#04x}",
            t.tag
        ));
    }
    Ok(t)
}

/// Reads a DER certificate.
pub fn read(cert: &[u8]) -> Result<CertFacts, String> {
    let cert = expect(cert, SEQUENCE, "Certificate")?;
    let tbs = expect(cert.body, SEQUENCE, "TBSCertificate")?;
    let mut at = tbs.body;
    // version [0] EXPLICIT, optional
    if at.first() == Some(&EXPLICIT_0) {
        at = tlv(at)?.rest;
    }
    at = tlv(at)?.rest; // serialNumber
    at = expect(at, SEQUENCE, "signature algorithm")?.rest;
    at = expect(at, SEQUENCE, "issuer")?.rest;
    let validity = expect(at, SEQUENCE, "validity")?;
    at = validity.rest;
    let not_before = tlv(validity.body)?;
    let not_after = tlv(not_before.rest)?;
    let not_after = time(not_after.tag, not_after.body)?;
    let subject = expect(at, SEQUENCE, "subject")?;
    let common_name = common_name(subject.body)?;
    at = subject.rest;
    at = expect(at, SEQUENCE, "subjectPublicKeyInfo")?.rest;
    let mut dns_names = Vec::new();
    while !at.is_empty() {
        let field = tlv(at)?;
        at = field.rest;
        if field.tag == EXPLICIT_3 {
            dns_names = san_dns_names(expect(field.body, SEQUENCE, "extensions")?.body)?;
        }
    }
    Ok(CertFacts {
        common_name,
        dns_names,
        not_after,
    })
}

fn common_name(mut rdns: &[u8]) -> Result<Option<String>, String> {
    while !rdns.is_empty() {
        let set = expect(rdns, SET, "RelativeDistinguishedName")?;
        rdns = set.rest;
        let mut atvs = set.body;
        while !atvs.is_empty() {
            let atv = expect(atvs, SEQUENCE, "AttributeTypeAndValue")?;
            atvs = atv.rest;
            let oid = expect(atv.body, OID, "attribute type")?;
            if oid.body == OID_CN {
                let value = tlv(oid.rest)?;
                return Ok(Some(String::from_utf8_lossy(value.body).into_owned()));
            }
        }
    }
    Ok(None)
}

fn san_dns_names(mut exts: &[u8]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    while !exts.is_empty() {
        let ext = expect(exts, SEQUENCE, "Extension")?;
        exts = ext.rest;
        let oid = expect(ext.body, OID, "extension id")?;
        if oid.body != OID_SAN {
            continue;
        }
        let mut value = tlv(oid.rest)?;
        if value.tag != OCTET_STRING {
            value = tlv(value.rest)?; // skip `critical`
        }
        let mut general = expect(value.body, SEQUENCE, "GeneralNames")?.body;
        while !general.is_empty() {
            let name = tlv(general)?;
            general = name.rest;
            if name.tag == DNS_NAME {
                names.push(String::from_utf8_lossy(name.body).to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` as Unix seconds.
fn time(tag: u8, body: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(body).map_err(|_| "time is not ASCII")?;
    let digits = text.strip_suffix('Z').ok_or("time without Z")?;
    let (year, rest) = match tag {
        UTC_TIME if digits.len() == 12 => {
            let yy: i64 = digits[..2].parse().map_err(|_| "bad year")?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        GENERALIZED_TIME if digits.len() == 14 => {
            (digits[..4].parse().map_err(|_| "bad year")?, &digits[4..])
        }
        _ => return Err(format!("unsupported time {text:?}")),
    };
    let num = |i: usize| -> Result<i64, String> {
        rest[i..i + 2]
            .parse()
            .map_err(|_| format!("bad time {text:?}"))
    };
    let (month, day, h, m, s) = (num(0)?, num(2)?, num(4)?, num(6)?, num(8)?);
    Ok(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_both_forms_become_unix_seconds() {
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Ok(0));
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Ok(2_524_607_999));
        assert_eq!(
            time(GENERALIZED_TIME, b"20240229120000Z"),
            Ok(1_709_208_000)
        );
        assert!(time(UTC_TIME, b"7001010000Z").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [
            &b""[..],
            b"\x30",
            b"\x30\x85\x00",
            b"\x30\x02\x30\x05",
            b"\x04\x00",
        ] {
            assert!(read(input).is_err(), "{input:?}");
        }
    }
}
