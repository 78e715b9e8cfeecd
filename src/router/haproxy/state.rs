//! Parsing HAProxy's answers: `show servers state` (where each server points, its
//! admin state and weight) and `show stat` (per-server counters, CSV). Columns are
//! found by their names in the header line, not by position, so a newer HAProxy that
//! adds columns still parses.

use std::fmt;
use std::net::SocketAddr;

/// Admin-state bits (HAProxy's `SRV_ADMF_*`): forced/inherited maintenance, resolution
/// and hostname maintenance, and forced/inherited drain. `0x04` (CMAINT) only records
/// that the config said `disabled`; it stays set after `state ready` and means nothing
/// for traffic.
const MAINT: u32 = 0x01 | 0x02 | 0x20 | 0x40;
const DRAIN: u32 = 0x08 | 0x10;

/// One server line of `show servers state`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ServerState {
    pub name: String,
    pub addr: Option<SocketAddr>,
    pub admin: u32,
    /// Operational state 2 (running): up, or without health checks.
    pub running: bool,
    pub weight: u32,
}

impl ServerState {
    /// Takes new requests (not in maintenance, not draining).
    pub fn is_ready(&self) -> bool {
        self.admin & (MAINT | DRAIN) == 0
    }

    /// The `set server` argument that puts this admin state back.
    pub fn admin_command(&self) -> &'static str {
        if self.admin & MAINT != 0 {
            "state maint"
        } else if self.admin & DRAIN != 0 {
            "state drain"
        } else {
            "state ready"
        }
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admin = if self.admin & MAINT != 0 {
            "maint"
        } else if self.admin & DRAIN != 0 {
            "drain"
        } else {
            "ready"
        };
        let addr = self.addr.map_or("-".to_string(), |a| a.to_string());
        let up = if self.running { "up" } else { "down" };
        write!(f, "{addr} {admin} {up} weight {}", self.weight)
    }
}

pub(super) fn parse_servers_state(text: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .find(|l| l.starts_with('#'))
        .ok_or_else(|| format!("unexpected answer: {}", first_line(text)))?;
    let cols: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("no `{name}` column in {header:?}"))
    };
    let (name, addr, op, admin, weight, port) = (
        col("srv_name")?,
        col("srv_addr")?,
        col("srv_op_state")?,
        col("srv_admin_state")?,
        col("srv_uweight")?,
        col("srv_port")?,
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let get = |i: usize| f.get(i).copied().ok_or_else(|| format!("short line {l:?}"));
            let num = |i: usize| -> Result<u32, String> {
                get(i)?
                    .parse()
                    .map_err(|_| format!("not a number in {l:?}"))
            };
            let ip = get(addr)?;
            let sock = format!("{ip}:{}", get(port)?).parse().ok();
            Ok(ServerState {
                name: get(name)?.to_string(),
                addr: sock,
                admin: num(admin)?,
                running: num(op)? == 2,
                weight: num(weight)?,
            })
        })
        .collect()
}

/// One server's counters from `show stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct ServerStat {
    /// Responses by class 1xx..5xx (`hrsp_other` counted as 5xx: HAProxy could not
    /// classify what the server sent).
    pub status_class: [u64; 5],
    /// Connection errors and response errors (`econ` + `eresp`).
    pub upstream_failed: u64,
    /// Current sessions on the server.
    pub current: u64,
    /// Average total time of the last 1024 requests, in ms.
    pub avg_total_ms: u64,
}

impl ServerStat {
    pub fn requests(&self) -> u64 {
        self.status_class.iter().sum::<u64>() + self.upstream_failed
    }
}

pub(super) fn parse_stat(text: &str, backend: &str, server: &str) -> Result<ServerStat, String> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .filter(|l| l.starts_with('#'))
        .ok_or_else(|| format!("unexpected answer: {}", first_line(text)))?;
    let cols: Vec<&str> = header.trim_start_matches('#').trim().split(',').collect();
    let row: Vec<&str> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&backend) && f.get(1) == Some(&server))
        .ok_or_else(|| format!("no server {backend}/{server}"))?;
    let n = |name: &str| -> u64 {
        cols.iter()
            .position(|c| *c == name)
            .and_then(|i| row.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ServerStat {
        status_class: [
            n("hrsp_1xx"),
            n("hrsp_2xx"),
            n("hrsp_3xx"),
            n("hrsp_4xx"),
            n("hrsp_5xx") + n("hrsp_other"),
        ],
        upstream_failed: n("econ") + n("eresp"),
        current: n("scur"),
        avg_total_ms: n("ttime"),
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("(nothing)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 web 1 blue 127.0.0.1 2 0 100 100 5 1 0 0 0 0 0 0 - 4001 - 0 0 - - 0\n3 web 2 green 127.0.0.1 0 8 100 100 5 1 0 0 0 0 0 0 - 4002 - 0 0 - - 0\n";

    #[test]
    fn servers_state_gives_address_admin_state_and_weight_by_column_name() {
        let s = parse_servers_state(STATE).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "blue");
        assert_eq!(s[0].addr, Some("127.0.0.1:4001".parse().unwrap()));
        assert!(s[0].is_ready() && s[0].running);
        assert!(!s[1].is_ready());
        assert_eq!(s[1].admin_command(), "state drain");
        assert_eq!(s[1].to_string(), "127.0.0.1:4002 drain down weight 100");
    }

    #[test]
    fn an_error_answer_is_reported_in_haproxys_words() {
        let e = parse_servers_state("Can't find backend.\n").unwrap_err();
        assert!(e.contains("Can't find backend."), "{e}");
    }

    #[test]
    fn show_stat_counts_status_classes_errors_and_sessions() {
        let text = "# pxname,svname,scur,econ,eresp,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,ttime\nweb,blue,3,1,2,0,90,0,1,5,0,12\nweb,green,0,,,0,0,0,0,0,0,0\n";
        let s = parse_stat(text, "web", "blue").unwrap();
        assert_eq!(s.status_class, [0, 90, 0, 1, 5]);
        assert_eq!(s.upstream_failed, 3);
        assert_eq!(s.requests(), 99);
        assert_eq!((s.current, s.avg_total_ms), (3, 12));
        assert!(parse_stat(text, "web", "red").is_err());
    }
}
