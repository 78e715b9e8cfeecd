//! Where a slot can be reached: a socket address, or a `host:port` resolved when it is
//! dialled (a Kubernetes Service `web-blue.prod.svc.cluster.local:8080`, a host name a
//! DNS switch points).
//!
//! Text form (config, store, API): `1.2.3.4:80`, `[::1]:80`, `name.example:8080`. The
//! port is required (1..=65535); a host is an RFC 1123 name (no scheme, no path, no
//! user info). `Display` writes back exactly what parsing read, so an address stored by
//! an older binary (always a socket address) reads back unchanged.
//!
//! Why the domain leaf holds two small I/O helpers ([`Endpoint::resolve`],
//! [`Endpoint::connect`]): every layer that dials a slot (the proxy, the checks, the
//! routers that need an IP) must follow the same rule — an [`Endpoint::Addr`] is dialled
//! as is, with no lookup and no allocation; a host is looked up at each dial and its
//! addresses tried in order — and they sit on different levels of the layer order.
//!
//! A host's name is an `Arc<str>`: cloning an endpoint (into a routing snapshot, per
//! proxied request, into an idle-connection set) never allocates.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::net::TcpStream;

/// Where a slot answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An IP address and port: dialled directly.
    Addr(SocketAddr),
    /// A host name and port: resolved each time it is dialled.
    Host { host: Arc<str>, port: u16 },
}

impl Endpoint {
    /// A host endpoint after checking the name (see the module docs).
    pub fn host(host: &str, port: u16) -> Result<Endpoint, String> {
        check_port(port)?;
        check_host(host)?;
        Ok(Endpoint::Host {
            host: host.into(),
            port,
        })
    }

    pub fn port(&self) -> u16 {
        match self {
            Endpoint::Addr(a) => a.port(),
            Endpoint::Host { port, .. } => *port,
        }
    }

    /// The host part alone: the IP's text or the name (what a TLS client checks the
    /// certificate against unless told another name).
    pub fn host_text(&self) -> String {
        match self {
            Endpoint::Addr(a) => a.ip().to_string(),
            Endpoint::Host { host, .. } => host.to_string(),
        }
    }

    /// The socket address, when the endpoint is one (no lookup).
    pub fn as_addr(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Addr(a) => Some(*a),
            Endpoint::Host { .. } => None,
        }
    }

    /// Every address the endpoint stands for now, in the resolver's order. An
    /// [`Endpoint::Addr`] is itself, without a lookup; a host with no address is a
    /// `NotFound` error naming it.
    pub async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        match self {
            Endpoint::Addr(a) => Ok(vec![*a]),
            Endpoint::Host { host, port } => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((&**host, *port))
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?
                    .collect();
                if addrs.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{host} has no address"),
                    ));
                }
                Ok(addrs)
            }
        }
    }

    /// A TCP connection (`TCP_NODELAY` set): an address is dialled as is; a host is
    /// resolved and its addresses tried in order until one accepts. The error is the
    /// last address's (its kind kept: `ConnectionRefused` stays recognisable). No
    /// timeout of its own: see [`Endpoint::connect_within`].
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let stream = match self {
            Endpoint::Addr(a) => TcpStream::connect(*a).await?,
            Endpoint::Host { .. } => {
                let mut last = None;
                let mut found = None;
                for addr in self.resolve().await? {
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match found {
                    Some(s) => s,
                    None => return Err(last.expect("resolve returns at least one address")),
                }
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// [`Endpoint::connect`] with `timeout` covering the lookup and every attempt; each
    /// address gets an equal share of what is left, so one that drops packets does not
    /// use up the time of those after it. Running out of time is `TimedOut`.
    pub async fn connect_within(&self, timeout: Duration) -> io::Result<TcpStream> {
        let timed_out = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {self} timed out"),
            )
        };
        let attempt = |addr: SocketAddr, within: Duration| async move {
            let s = tokio::time::timeout(within, TcpStream::connect(addr))
                .await
                .map_err(|_| timed_out())??;
            s.set_nodelay(true)?;
            Ok::<_, io::Error>(s)
        };
        if let Endpoint::Addr(a) = self {
            return attempt(*a, timeout).await;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let addrs = tokio::time::timeout(timeout, self.resolve())
            .await
            .map_err(|_| timed_out())??;
        let mut last = None;
        for (i, addr) in addrs.iter().enumerate() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let share = left / (addrs.len() - i) as u32;
            match attempt(*addr, share).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(timed_out))
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Endpoint::Addr(a)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(a) => a.fmt(f),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            check_port(addr.port()).map_err(|e| format!("`{s}`: {e}"))?;
            return Ok(Endpoint::Addr(addr));
        }
        let why = |m: &str| format!("expected `host:port` or `ip:port`, got `{s}`: {m}");
        if s.contains("://") {
            return Err(why("no scheme (`http://`) in an address"));
        }
        if s.contains('/') {
            return Err(why("no path in an address"));
        }
        if s.starts_with('[') {
            return Err(why("not a valid IPv6 address"));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(why("the port is missing"));
        };
        if host.contains(':') {
            return Err(why("an IPv6 address goes in brackets: `[::1]:80`"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| why("the port must be a number from 1 to 65535"))?;
        Endpoint::host(host, port).map_err(|m| why(&m))
    }
}

fn check_port(port: u16) -> Result<(), String> {
    if port == 0 {
        return Err("the port must be from 1 to 65535".into());
    }
    Ok(())
}

/// An RFC 1123 host name: dot-separated labels of letters, digits and `-` (not first
/// or last), each 1..=63 long, 253 at most in all (one trailing dot allowed), and not
/// all digits at the end (`1.2.3.999` is a broken IP address, not a name).
fn check_host(host: &str) -> Result<(), String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err("the host name is empty".into());
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "`{host}` is not a host name (each dot-separated part is 1 to 63 characters)"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "`{host}` is not a host name (letters, digits, `-` and `.` only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "`{host}` is not a host name (a part cannot begin or end with `-`)"
            ));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{host}` is not a valid IP address"));
    }
    Ok(())
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// EMFILE or ENFILE: no descriptor is left for a new socket, in this process or the
/// system. Cutover's own overload: a connect that fails so says nothing about the
/// release it was meant for (the proxy answers 503, health rounds are inconclusive).
pub fn out_of_descriptors(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(e.raw_os_error(), Some(n) if n == Errno::EMFILE as i32 || n == Errno::ENFILE as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Endpoint, String> {
        s.parse()
    }

    #[test]
    fn socket_addresses_parse_as_addresses() {
        assert_eq!(
            parse("1.2.3.4:80").unwrap(),
            Endpoint::Addr("1.2.3.4:80".parse().unwrap())
        );
        assert_eq!(
            parse("[::1]:8080").unwrap(),
            Endpoint::Addr("[::1]:8080".parse().unwrap())
        );
    }

    #[test]
    fn host_names_parse_as_hosts() {
        assert_eq!(
            parse("web-blue.prod.svc.cluster.local:8080").unwrap(),
            Endpoint::Host {
                host: "web-blue.prod.svc.cluster.local".into(),
                port: 8080
            }
        );
        assert_eq!(parse("localhost:1").unwrap().port(), 1);
        assert!(parse("LocalHost:80").is_ok(), "names are case-insensitive");
        assert!(parse("web.example.:80").is_ok(), "a fully qualified name");
        assert!(
            parse("3com.example:80").is_ok(),
            "a label may begin with a digit"
        );
    }

    #[test]
    fn malformed_endpoints_are_refused_with_the_reason() {
        for (text, why) in [
            ("web", "port is missing"),
            ("web:", "port must be a number"),
            ("web:0", "1 to 65535"),
            ("127.0.0.1:0", "1 to 65535"),
            ("web:65536", "port must be a number"),
            ("web:http", "port must be a number"),
            ("http://web:80", "no scheme"),
            ("web:80/health", "no path"),
            ("-web:80", "begin or end with `-`"),
            ("web-:80", "begin or end with `-`"),
            ("we_b:80", "letters, digits"),
            ("user@web:80", "letters, digits"),
            ("web..example:80", "1 to 63"),
            (":80", "empty"),
            ("1.2.3.999:80", "not a valid IP address"),
            ("::1:80", "in brackets"),
            ("[::1:80", "IPv6"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(text), "the error quotes the input: {err}");
        }
        let long_label = format!("{}.example:80", "a".repeat(64));
        assert!(parse(&long_label).unwrap_err().contains("1 to 63"));
        let long_name = format!("{}:80", ["abcdefghi"; 26].join("."));
        assert!(parse(&long_name).unwrap_err().contains("253"));
    }

    #[test]
    fn display_writes_back_what_was_parsed() {
        for text in [
            "127.0.0.1:4001",
            "[::1]:80",
            "[2001:db8::1]:443",
            "web-blue.prod.svc.cluster.local:8080",
            "LocalHost:80",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let e = parse("web.internal:8080").unwrap();
        assert_eq!(serde_json::to_value(&e).unwrap(), "web.internal:8080");
        let back: Endpoint = serde_json::from_str("\"[::1]:80\"").unwrap();
        assert_eq!(back, parse("[::1]:80").unwrap());
        let err = serde_json::from_str::<Endpoint>("\"web\"").unwrap_err();
        assert!(err.to_string().contains("port is missing"), "{err}");
    }

    #[tokio::test]
    async fn an_address_resolves_to_itself_without_a_lookup() {
        // 192.0.2.0/24 is TEST-NET-1: any lookup or connection would go nowhere.
        let e = parse("192.0.2.7:80").unwrap();
        assert_eq!(
            e.resolve().await.unwrap(),
            vec!["192.0.2.7:80".parse().unwrap()]
        );
        assert_eq!(e.as_addr(), Some("192.0.2.7:80".parse().unwrap()));
    }

    #[tokio::test]
    async fn localhost_resolves_and_connects_to_a_listener_on_the_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let e = Endpoint::host("localhost", port).unwrap();
        let addrs = e.resolve().await.unwrap();
        assert!(
            addrs.contains(&SocketAddr::from(([127, 0, 0, 1], port))),
            "{addrs:?}"
        );
        // `localhost` may resolve to ::1 first, where nothing listens: the next is tried.
        let s = e.connect().await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), listener.local_addr().unwrap());
        let s = e.connect_within(Duration::from_secs(5)).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), listener.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_refused_host_keeps_the_refused_kind() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = Endpoint::host("localhost", port).unwrap();
        let err = e.connect_within(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_an_error_naming_it() {
        let e = Endpoint::host("no-such-host.invalid", 80).unwrap();
        let err = e.resolve().await.unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
        assert!(e.connect().await.is_err());
    }
}
