//! Which releases the compatibility proof must run against the migrated copy, and when
//! a contract step cannot pass at all (`contract_gate`): pure, so the rule is a table
//! test.

use crate::domain::Slot;

pub(super) const LIVE: &str = "live release";

pub(super) const WARM: &str = "kept-warm release";

/// The releases the proof must run against the migrated copy (slot, version, role), or
/// why a contract step cannot pass.
///
/// The live release is proven whenever `prove` is on. A contract step (it drops what an
/// older release used) passes only when no release that runs or is kept warm needs the
/// old schema: so the standby kept warm in the other slot is proven too (until the new
/// release replaces it, a failover may send traffic to it), and with `prove = false`
/// a contract step is refused while either runs.
pub(super) fn contract_gate(
    live: Option<&(Slot, String)>,
    warm: Option<&(Slot, String)>,
    prove: bool,
    contract: bool,
) -> Result<Vec<(Slot, String, &'static str)>, String> {
    let mut releases: Vec<(Slot, String, &'static str)> = live
        .map(|(s, v)| (*s, v.clone(), LIVE))
        .into_iter()
        .collect();
    if contract {
        releases.extend(warm.map(|(s, v)| (*s, v.clone(), WARM)));
    }
    if !contract || prove || releases.is_empty() {
        return Ok(releases);
    }
    let who: Vec<String> = releases
        .iter()
        .map(|(s, v, role)| format!("the {role} {v} in {s}"))
        .collect();
    Err(format!(
        "a contract step passes only when no release that runs or is kept warm needs the old schema, or each is proven against it (`prove = true`); {} still {}",
        who.join(" and "),
        if who.len() == 1 { "runs" } else { "run" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contract_step_proves_every_release_that_runs_or_is_kept_warm_or_is_refused() {
        let live = (Slot::Blue, "v3".to_string());
        let warm = (Slot::Green, "v2".to_string());
        let roles = |r: Result<Vec<(Slot, String, &str)>, String>| {
            r.map(|v| {
                v.into_iter()
                    .map(|(_, v, role)| format!("{v} {role}"))
                    .collect::<Vec<_>>()
            })
        };
        // An additive migration: only the live release is proven.
        assert_eq!(
            roles(contract_gate(Some(&live), Some(&warm), true, false)),
            Ok(vec!["v3 live release".to_string()])
        );
        // A contract step: the kept-warm release too.
        assert_eq!(
            roles(contract_gate(Some(&live), Some(&warm), true, true)),
            Ok(vec![
                "v3 live release".to_string(),
                "v2 kept-warm release".to_string()
            ])
        );
        // Nothing runs: nothing to prove, the contract step passes.
        assert_eq!(roles(contract_gate(None, None, false, true)), Ok(vec![]));
        // Without the proof, any release that runs or is kept warm refuses it.
        let why = contract_gate(None, Some(&warm), false, true).expect_err("refused");
        assert!(
            why.contains("the kept-warm release v2 in green still runs"),
            "{why}"
        );
        let why = contract_gate(Some(&live), Some(&warm), false, true).expect_err("refused");
        assert!(
            why.contains("v3 in blue and the kept-warm release v2"),
            "{why}"
        );
        // Without a contract step and without the proof, nothing is proven.
        assert_eq!(
            roles(contract_gate(Some(&live), None, false, false)),
            Ok(vec!["v3 live release".to_string()])
        );
    }
}
