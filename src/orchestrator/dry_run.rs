//! What a deploy would do, without doing it (`cutover plan`, `deploy --dry-run`), and a
//! slot's release output (`cutover logs`).
//!
//! Why here and not in the API or the CLI: the dry run must take the same decisions a
//! real deploy takes, so it reads the store the way [`Controller::deploy`] does (the
//! idle slot is the target, the live one is replaced) and builds the deployment's plan
//! with the same [`Plan::new`]. It only reads: the store, the runtime's status and, when
//! the service has a database, the version table (the same code as `cutover db
//! status`). Nothing is locked, started, written or switched.

use serde::Serialize;
use serde_json::{json, Value};

use super::machine::Plan;
use super::{ControlError, Controller};
use crate::config::{
    HookAction, MigrationSource, Pause, Probe, RouterConfig, ServiceConfig, Strategy,
};
use crate::domain::Slot;
use crate::store::DeploymentKind;

/// The answer of a dry run: every field is a decision the deploy would take now.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub service: String,
    pub version: String,
    pub environment: Option<String>,
    /// The slot the release would start in (the idle one).
    pub target_slot: Slot,
    /// What that slot holds now and would lose (`{version, state}`).
    pub target_now: Value,
    /// The live slot whose release would be replaced (`None` on a first deploy).
    pub from_slot: Option<Slot>,
    pub replaces_version: Option<String>,
    /// A deployment of the service is already in progress (the deploy would be refused).
    pub blocked_by: Option<i64>,
    /// Health checks and their thresholds.
    pub health: Value,
    /// Smoke test steps (empty: none run).
    pub smoke: Vec<String>,
    /// `blue-green` or `canary` with its steps.
    pub strategy: Value,
    pub mirror: Value,
    pub analysis: Value,
    /// The watch after the switch and its rollback triggers.
    pub watch: Value,
    /// How traffic would move.
    pub router: Value,
    /// Hooks by point, in the order they would run.
    pub hooks: Vec<Value>,
    /// Pending migrations and the gate's verdict (`null`: no database).
    pub database: Value,
    /// How long the replaced release stays warm.
    pub warm_for_ms: u64,
    /// The phases in order.
    pub steps: Vec<String>,
}

impl Controller {
    /// What deploying `version` of `service` would do now; changes nothing.
    pub async fn dry_run(&self, service: &str, version: &str) -> Result<DryRun, ControlError> {
        let cfg = self
            .config()
            .services
            .get(service)
            .ok_or_else(|| ControlError::UnknownService(service.into()))?;
        let rec = self.store().service(service)?;
        let active = self.store().active_deployment(service)?;
        let from = rec.live;
        let target = from.map(Slot::other).unwrap_or(Slot::Blue);
        let plan = Plan::new(DeploymentKind::Deploy, cfg, target, from, false);
        let slot_now = &rec.slots[target.index()];
        Ok(DryRun {
            service: service.into(),
            version: version.into(),
            environment: cfg.environment.clone(),
            target_slot: target,
            target_now: json!({
                "version": slot_now.version,
                "state": slot_now.state.as_str(),
                "running": self.slot_running(service, target).await,
            }),
            from_slot: from,
            replaces_version: from.and_then(|s| rec.slots[s.index()].version.clone()),
            blocked_by: active.map(|a| a.id),
            health: health(cfg, &plan),
            smoke: cfg.smoke.steps.iter().map(|s| s.name.clone()).collect(),
            strategy: strategy(cfg),
            mirror: plan.mirror.as_ref().map_or(Value::Null, |m| {
                json!({ "percent": m.percent, "duration_ms": ms(m.duration),
                        "max_mismatch": m.max_mismatch, "methods": m.methods })
            }),
            analysis: plan.analysis.as_ref().map_or(Value::Null, |a| {
                json!({ "interval_ms": ms(a.interval), "count": a.count,
                        "failure_limit": a.failure_limit,
                        "metrics": a.metrics.iter().map(|m| m.name.clone()).collect::<Vec<_>>() })
            }),
            watch: watch(&plan),
            router: router(cfg, target, from),
            hooks: hooks(cfg, &plan),
            database: self.pending_migrations(cfg).await,
            warm_for_ms: ms(plan.warm_for),
            steps: steps(cfg, &plan),
        })
    }

    /// The last `lines` lines a slot's release printed, through its runtime (the
    /// process runtime's slot log file; container logs for Docker and Compose).
    pub async fn slot_logs(
        &self,
        service: &str,
        slot: Slot,
        lines: usize,
    ) -> Result<Vec<String>, ControlError> {
        let rt = self
            .runtimes_get(service)
            .ok_or_else(|| ControlError::UnknownService(service.into()))?;
        Ok(rt.log_tail(service, slot, lines).await)
    }

    /// Pending migrations and the gate's verdict, as `cutover db status` shows them;
    /// an unreachable database is reported in the answer, not as an error.
    async fn pending_migrations(&self, cfg: &ServiceConfig) -> Value {
        use crate::database::{files, lint, migrate, Database};
        let Some(dbcfg) = cfg.database.clone() else {
            return Value::Null;
        };
        let db = Database::new(&cfg.name, dbcfg, &self.config().daemon.state_dir);
        let backups = db.cfg.keep_backups;
        let dir = match &db.cfg.migrations {
            MigrationSource::Files(dir) => dir.clone(),
            MigrationSource::Command { .. } => {
                return json!({ "database": db.base_name(), "migrations": "command",
                               "keep_backups": backups });
            }
        };
        let read = async {
            let client = db.connect(None).await.map_err(|e| e.to_string())?;
            let applied = migrate::applied(&client).await.map_err(|e| e.to_string())?;
            let all = files::load(&dir).map_err(|e| e.to_string())?;
            let pending = migrate::pending(&all, &applied);
            let report = lint::lint(&pending, db.cfg.prove);
            Ok::<_, String>(json!({
                "applied": applied.last().map(|a| a.version),
                "pending": pending.iter().map(|m| m.label()).collect::<Vec<_>>(),
                "gate": { "passed": report.passed(), "reason": report.reason() },
            }))
        };
        let mut v = read
            .await
            .unwrap_or_else(|e| json!({ "error": format!("cannot read the migrations: {e}") }));
        v["database"] = json!(db.base_name());
        v["strategy"] = json!(db.cfg.strategy.as_str());
        v["keep_backups"] = json!(backups);
        v
    }
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

fn health(cfg: &ServiceConfig, plan: &Plan) -> Value {
    let checks: Vec<Value> = cfg
        .health
        .checks
        .iter()
        .map(|c| {
            let probe = match &c.probe {
                Probe::Http(h) => format!("GET {}", h.path),
                Probe::Tcp => "tcp connect".into(),
                Probe::Command(argv) => format!("command {}", argv.join(" ")),
            };
            json!({ "name": c.name, "probe": probe })
        })
        .collect();
    json!({
        "checks": checks,
        "interval_ms": ms(plan.health_interval),
        "healthy_threshold": plan.healthy_threshold,
        "unhealthy_threshold": plan.unhealthy_threshold,
        "deadline_ms": ms(plan.health_deadline),
    })
}

fn strategy(cfg: &ServiceConfig) -> Value {
    match &cfg.strategy {
        Strategy::BlueGreen => json!({ "kind": "blue-green", "steps": [ { "weight": 100 } ] }),
        Strategy::Canary(c) => {
            let steps: Vec<Value> = c
                .steps
                .iter()
                .map(|s| {
                    let pause = match &s.pause {
                        Pause::None => json!(null),
                        Pause::For(d) => json!(format!("{}", humantime::format_duration(*d))),
                        Pause::UntilPromoted => json!("until promoted"),
                    };
                    json!({ "weight": s.weight, "pause": pause, "analyze": s.analyze })
                })
                .collect();
            json!({ "kind": "canary", "sticky": c.sticky, "steps": steps })
        }
    }
}

fn watch(plan: &Plan) -> Value {
    let Some(w) = &plan.watch else {
        return Value::Null;
    };
    let mut triggers = vec![format!(
        "{} failed health rounds of the new release",
        w.health_failures
    )];
    if let Some(e) = &w.error_rate {
        triggers.push(format!(
            "error rate > {}% for {} (at least {} requests)",
            e.max * 100.0,
            humantime::format_duration(e.for_),
            e.min_requests
        ));
    }
    if let Some(l) = &w.p95_latency {
        triggers.push(format!(
            "p95 latency > {} for {} (at least {} requests)",
            humantime::format_duration(l.max),
            humantime::format_duration(l.for_),
            l.min_requests
        ));
    }
    if plan.analysis.is_some() {
        triggers.push("metric analysis fails".into());
    }
    json!({ "duration_ms": ms(w.duration), "triggers": triggers })
}

fn router(cfg: &ServiceConfig, target: Slot, from: Option<Slot>) -> Value {
    let change = match from {
        Some(f) => format!("traffic moves from {f} to {target}"),
        None => format!("first release: traffic starts on {target}"),
    };
    let kind = cfg.router.kind();
    let how = match &cfg.router {
        RouterConfig::Builtin => "the built-in proxy's routing table is swapped atomically",
        RouterConfig::Nginx(_) => "nginx config rendered, `nginx -t`, reload",
        RouterConfig::Haproxy(_) => "HAProxy server weights set over the admin socket",
        RouterConfig::Traefik(_) => "Traefik dynamic config file rewritten",
        RouterConfig::Caddy(_) => "Caddy admin API config replaced",
        RouterConfig::Dns(_) => "the name's records replaced by a signed DNS update",
        RouterConfig::Kubernetes(k) => match k.target {
            crate::config::KubeRoute::Service { .. } => {
                "the Service's selector patched to the slot's pods (kubectl)"
            }
            crate::config::KubeRoute::HttpRoute { .. } => {
                "the HTTPRoute's backend weights patched (kubectl)"
            }
        },
    };
    json!({ "kind": kind, "change": change, "how": how })
}

fn hooks(cfg: &ServiceConfig, plan: &Plan) -> Vec<Value> {
    plan.hooks
        .iter()
        .map(|point| {
            let names: Vec<Value> = cfg
                .hooks
                .iter()
                .filter(|h| h.at == *point)
                .map(|h| {
                    let kind = match &h.action {
                        HookAction::Command { .. } => "command",
                        HookAction::Http(_) => "http",
                    };
                    json!({ "name": h.name, "kind": kind })
                })
                .collect();
            json!({ "at": point.as_str(), "hooks": names })
        })
        .collect()
}

/// The phases a deploy would go through, in order.
fn steps(cfg: &ServiceConfig, plan: &Plan) -> Vec<String> {
    let has = |p: crate::config::HookPoint| plan.hooks.contains(&p);
    let mut out = Vec::new();
    if has(crate::config::HookPoint::BeforeStart) {
        out.push("hooks before_start".into());
    }
    if plan.database {
        out.push("database: backup, migrations through the compatibility gate".into());
    }
    out.push(format!("start {} in {}", cfg.name, plan.target));
    out.push("wait until healthy".into());
    if plan.run_smoke {
        out.push("smoke tests".into());
    }
    if plan.mirror.is_some() {
        out.push("mirror live traffic".into());
    }
    if has(crate::config::HookPoint::PreSwitch) {
        out.push("hooks pre_switch".into());
    }
    if plan.canary.is_empty() {
        out.push(format!("switch all traffic to {}", plan.target));
    } else {
        for s in &plan.canary {
            out.push(format!("canary {}% to {}", s.weight, plan.target));
        }
    }
    if has(crate::config::HookPoint::PostSwitch) {
        out.push("hooks post_switch".into());
    }
    if plan.watch.is_some() {
        out.push("watch".into());
    }
    if has(crate::config::HookPoint::AfterSuccess) {
        out.push("hooks after_success".into());
    }
    if let Some(f) = plan.from {
        out.push(format!(
            "keep {f} warm for {}, then stop it",
            humantime::format_duration(plan.warm_for)
        ));
    }
    out
}
