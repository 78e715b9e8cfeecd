//! DNS as a [`Router`]: the service's name is pointed at the live slot by an RFC 2136
//! dynamic update, signed with a TSIG key (RFC 8945), sent over TCP to the zone's
//! primary server (BIND 9, Knot, PowerDNS, ... anything that takes signed updates).
//!
//! One update message replaces, atomically at the server, the name's A and AAAA
//! records and a TXT record at `_cutover.<name>` that names the live slot: the server
//! applies all of it or nothing. Cutover then asks the server for both and returns only
//! when they say what was sent (the server's answer is what resolvers will fetch).
//! `observed_live` reads the TXT record, so drift (someone else changed the marker) is
//! seen.
//!
//! What DNS cannot do, and how the rest of Cutover deals with it:
//! - no split by weight: canary steps are refused in the config (`config/service.rs`);
//! - no per-request statistics: the watch's error-rate and latency triggers see
//!   nothing (health checks and release exits still roll back);
//! - resolvers keep the previous answer for the TTL: nothing is in flight *here* to
//!   drain, so the drain returns at once, and the config requires `warm_for` ≥ `ttl`
//!   so the previous release keeps running while cached answers still point at it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Router, RouterError};
use crate::config::DnsRouterConfig;
use crate::domain::routing::Target;
use crate::domain::stats::StatsSnapshot;
use crate::domain::Slot;

/// How far the server's clock may be from Cutover's for a signature to be accepted
/// (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

/// The label of the TXT record beside the name that says which slot is live.
const MARKER: &str = "_cutover";

pub struct DnsRouter {
    service: String,
    config: DnsRouterConfig,
    signer: TSigner,
    zone: Name,
    name: Name,
    marker: Name,
    /// One change at a time: two updates could otherwise interleave their checks.
    lock: tokio::sync::Mutex<()>,
}

impl DnsRouter {
    pub fn new(service: &str, config: DnsRouterConfig) -> Result<Self, RouterError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            RouterError::Rejected(format!("dns router of `{service}`: {what}: {e}"))
        };
        let algorithm = match config.key.algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => return Err(bad("key algorithm", &other)),
        };
        let key_name = Name::from_ascii(&config.key.name).map_err(|e| bad("key name", &e))?;
        let signer = TSigner::new(config.key.secret.clone(), algorithm, key_name, FUDGE)
            .map_err(|e| bad("key", &e))?;
        let zone = Name::from_ascii(&config.zone).map_err(|e| bad("zone", &e))?;
        let name = Name::from_ascii(&config.name).map_err(|e| bad("name", &e))?;
        let marker = Name::from_ascii(MARKER)
            .and_then(|m| m.append_name(&name))
            .map_err(|e| bad("name", &e))?;
        Ok(DnsRouter {
            service: service.to_string(),
            config,
            signer,
            zone,
            name,
            marker,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    fn check_service(&self, service: &str) -> Result<(), RouterError> {
        if service == self.service {
            Ok(())
        } else {
            Err(RouterError::UnknownService(service.to_string()))
        }
    }

    /// What the record should say for `target`: the configured addresses, else the
    /// addresses its endpoint resolves to.
    async fn addresses(&self, target: &Target) -> Result<Vec<IpAddr>, RouterError> {
        if let Some(list) = self
            .config
            .addresses
            .as_ref()
            .and_then(|a| a.get(&target.slot))
        {
            return Ok(list.clone());
        }
        let mut ips: Vec<IpAddr> = target
            .endpoint
            .resolve()
            .await
            .map_err(|e| {
                RouterError::Unreachable(format!("cannot resolve {}: {e}", target.endpoint))
            })?
            .into_iter()
            .map(|a| a.ip())
            .collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
    }

    /// The update that points the name at `ips` and marks `slot` live.
    fn update(&self, ips: &[IpAddr], slot: Slot) -> Message {
        let mut m = Message::query();
        m.metadata.op_code = OpCode::Update;
        m.metadata.recursion_desired = false;
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        m.add_zone(zone);
        let ttl = u32::try_from(self.config.ttl.as_secs()).unwrap_or(u32::MAX);
        for (owner, rtype) in [
            (&self.name, RecordType::A),
            (&self.name, RecordType::AAAA),
            (&self.marker, RecordType::TXT),
        ] {
            // RFC 2136 §2.5.2: delete an RRset (class ANY, TTL 0, no data).
            let mut delete = Record::update0(owner.clone(), 0, rtype).into_record_of_rdata();
            delete.dns_class = DNSClass::ANY;
            m.add_update(delete);
        }
        for ip in ips {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            m.add_update(Record::from_rdata(self.name.clone(), ttl, data));
        }
        let marker = RData::TXT(TXT::new(vec![slot.to_string()]));
        m.add_update(Record::from_rdata(self.marker.clone(), ttl, marker));
        m
    }

    /// One request and its answer over TCP (RFC 1035 §4.2.2: a two-byte length before
    /// each message). `signed`: the request carries the TSIG signature and the answer
    /// must carry the server's, checked against it.
    async fn exchange(&self, mut msg: Message, signed: bool) -> Result<Message, RouterError> {
        msg.metadata.id = fastrand::u16(..);
        let id = msg.metadata.id;
        let verifier = if signed {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            msg.finalize(&self.signer, now)
                .map_err(|e| RouterError::Rejected(format!("cannot sign the update: {e}")))?
        } else {
            None
        };
        let request = msg
            .to_vec()
            .map_err(|e| RouterError::Rejected(format!("cannot encode the message: {e}")))?;
        let server = &self.config.server;
        let io = async {
            let addrs = server.resolve().await?;
            let mut stream = TcpStream::connect(&addrs[..]).await?;
            let len = u16::try_from(request.len()).map_err(std::io::Error::other)?;
            stream.write_all(&len.to_be_bytes()).await?;
            stream.write_all(&request).await?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(self.config.timeout, io)
            .await
            .map_err(|_| {
                RouterError::Unreachable(format!(
                    "DNS server {server}: no answer within {:?}",
                    self.config.timeout
                ))
            })?
            .map_err(|e| RouterError::Unreachable(format!("DNS server {server}: {e}")))?;
        let message = match verifier {
            Some(mut v) => match v.verify(&answer) {
                Ok(resp) => resp.into_message(),
                Err(e) => return Err(unverified(&answer, &e.to_string())),
            },
            None => Message::from_vec(&answer).map_err(|e| {
                RouterError::Rejected(format!("DNS server {server}: unreadable answer: {e}"))
            })?,
        };
        if message.metadata.id != id {
            return Err(RouterError::Rejected(format!(
                "DNS server {server}: an answer to another request"
            )));
        }
        Ok(message)
    }

    /// The server's answer for `owner`/`rtype`: its data, empty when there is none.
    async fn lookup(&self, owner: &Name, rtype: RecordType) -> Result<Vec<RData>, RouterError> {
        let mut q = Message::query();
        q.metadata.recursion_desired = false;
        q.add_query(Query::query(owner.clone(), rtype));
        let answer = self.exchange(q, false).await?;
        match answer.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer
                .answers
                .iter()
                .filter(|r| r.record_type() == rtype && &r.name == owner)
                .map(|r| r.data.clone())
                .collect()),
            code => Err(RouterError::Rejected(format!(
                "DNS server {}: query for {owner} {rtype} answered {code}",
                self.config.server
            ))),
        }
    }

    /// What the server says now: the name's addresses and the slot its marker names.
    async fn current(&self) -> Result<(Vec<IpAddr>, Option<Slot>), RouterError> {
        let mut ips = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            for data in self.lookup(&self.name, rtype).await? {
                match data {
                    RData::A(a) => ips.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => ips.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
        ips.sort();
        Ok((ips, self.marked().await?))
    }

    /// The slot the TXT marker names (one query: what `status` asks on every call).
    async fn marked(&self) -> Result<Option<Slot>, RouterError> {
        Ok(self
            .lookup(&self.marker, RecordType::TXT)
            .await?
            .into_iter()
            .find_map(|d| match d {
                RData::TXT(t) => t
                    .txt_data
                    .first()
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse::<Slot>().ok()),
                _ => None,
            }))
    }
}

/// A response code as people read it and as RFC 1035/2136 name it:
/// `Not authorized (NOTAUTH)`.
fn named(code: ResponseCode) -> String {
    format!("{code} ({})", format!("{code:?}").to_ascii_uppercase())
}

/// An answer to a signed update that does not carry a valid signature: what the server
/// said, if it can be read (a refused key or signature comes back unsigned, NOTAUTH).
fn unverified(answer: &[u8], why: &str) -> RouterError {
    match Message::from_vec(answer) {
        Ok(m) if m.metadata.response_code != ResponseCode::NoError => {
            let tsig = m
                .signature
                .as_ref()
                .and_then(|s| s.data.error)
                .map(|e| format!(" (TSIG: {e:?})"))
                .unwrap_or_default();
            RouterError::Rejected(format!(
                "the DNS server refused the update: {}{tsig}; check the key file's name, algorithm and secret against the server's",
                named(m.metadata.response_code)
            ))
        }
        _ => RouterError::Rejected(format!(
            "the DNS server's answer failed TSIG verification: {why}"
        )),
    }
}

#[async_trait]
impl Router for DnsRouter {
    fn kind(&self) -> &'static str {
        "dns"
    }

    /// Points the name at `live`; `None` leaves the records as they are. The preview
    /// slot is not published (reach it by its own address).
    async fn apply(
        &self,
        service: &str,
        live: Option<Target>,
        _preview: Option<Target>,
    ) -> Result<(), RouterError> {
        self.check_service(service)?;
        let Some(live) = live else { return Ok(()) };
        let _guard = self.lock.lock().await;
        let mut ips = self.addresses(&live).await?;
        ips.sort();
        if ips.is_empty() {
            return Err(RouterError::Rejected(format!(
                "{} has no address to publish",
                live.endpoint
            )));
        }
        // Without `addresses`, two slots on one host publish the same address, and
        // the update would switch nothing (`validate` cannot know the endpoints).
        let (before, marked) = self.current().await?;
        if before == ips && marked.is_some_and(|s| s != live.slot) {
            return Err(RouterError::Rejected(format!(
                "{} would be published at {ips:?}, where the name already points for the other slot: give each slot its own address in [services.{}.router.addresses]",
                live.slot, self.service
            )));
        }
        let answer = self.exchange(self.update(&ips, live.slot), true).await?;
        let code = answer.metadata.response_code;
        if code != ResponseCode::NoError {
            return Err(RouterError::Rejected(format!(
                "the DNS server refused the update: {} (is `allow-update` or an `update-policy` granting the key {:?} on {}?)",
                named(code), self.config.key.name, self.config.zone
            )));
        }
        let (now, slot) = self.current().await?;
        if now != ips || slot != Some(live.slot) {
            return Err(RouterError::Rejected(format!(
                "the DNS server accepted the update but answers {now:?} (marker {slot:?}) for {}, not {ips:?} ({})",
                self.config.name, live.slot
            )));
        }
        tracing::info!(service = %self.service, name = %self.config.name, slot = %live.slot, addresses = ?ips, "DNS record updated");
        Ok(())
    }

    async fn observed_live(&self, service: &str) -> Result<Option<Slot>, RouterError> {
        self.check_service(service)?;
        self.marked().await
    }

    /// Nothing is in flight at a DNS server; clients holding a cached answer are what
    /// `warm_for` ≥ `ttl` is for.
    async fn drain(
        &self,
        service: &str,
        _slot: Slot,
        _timeout: Duration,
    ) -> Result<u64, RouterError> {
        self.check_service(service)?;
        Ok(0)
    }

    async fn stats(&self, _service: &str, _slot: Slot) -> Option<StatsSnapshot> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TsigKey;
    use crate::domain::endpoint::Endpoint;

    fn router(server: std::net::SocketAddr, timeout: Duration) -> DnsRouter {
        let config = DnsRouterConfig {
            server: Endpoint::Addr(server),
            zone: "example.test.".into(),
            name: "web.example.test.".into(),
            ttl: Duration::from_secs(30),
            key: TsigKey {
                name: "cutover".into(),
                algorithm: "hmac-sha256".into(),
                secret: b"secret-secret-secret-secret!".to_vec(),
            },
            addresses: None,
            timeout,
        };
        DnsRouter::new("web", config).unwrap()
    }

    #[test]
    fn one_update_replaces_both_address_sets_and_the_marker() {
        let r = router("127.0.0.1:53".parse().unwrap(), Duration::from_secs(1));
        let ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let m = r.update(&ips, Slot::Green);
        assert_eq!(m.metadata.op_code, OpCode::Update);
        let zones = m.zones();
        assert_eq!(zones.len(), 1);
        assert_eq!(zones[0].name().to_string(), "example.test.");
        let updates = m.updates();
        let deletes: Vec<(String, RecordType)> = updates
            .iter()
            .filter(|u| u.dns_class == DNSClass::ANY)
            .map(|u| (u.name.to_string(), u.record_type()))
            .collect();
        assert_eq!(
            deletes,
            [
                ("web.example.test.".to_string(), RecordType::A),
                ("web.example.test.".to_string(), RecordType::AAAA),
                ("_cutover.web.example.test.".to_string(), RecordType::TXT),
            ]
        );
        let adds: Vec<String> = updates
            .iter()
            .filter(|u| u.dns_class == DNSClass::IN)
            .map(|u| format!("{} {} {}", u.name, u.ttl, u.data))
            .collect();
        assert_eq!(
            adds,
            [
                "web.example.test. 30 192.0.2.1",
                "web.example.test. 30 2001:db8::1",
                "_cutover.web.example.test. 30 green",
            ]
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_on_after_the_timeout() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (conn, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(conn);
        });
        let r = router(addr, Duration::from_millis(300));
        let err = r.observed_live("web").await.unwrap_err();
        assert!(
            matches!(&err, RouterError::Unreachable(m) if m.contains("no answer within")),
            "{err}"
        );
        hold.abort();
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_unreachable_not_a_refusal() {
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let r = router(addr, Duration::from_secs(2));
        let err = r.observed_live("web").await.unwrap_err();
        assert!(matches!(err, RouterError::Unreachable(_)), "{err}");
        assert!(matches!(
            r.observed_live("other").await,
            Err(RouterError::UnknownService(_))
        ));
    }
}
