//! `cutover preview-url SERVICE`: signs a preview token locally with the config's
//! preview secret (no daemon involved).

use std::process::ExitCode;

use serde_json::json;

use super::output::{fail, json_out, mode};
use crate::config::Config;

/// `cutover preview-url SERVICE`: a token signed with the preview secret, printed
/// with the header and cookie that carry it. Exit 2 when preview is off or the service
/// unknown.
pub fn preview_url(cfg: &Config, service: &str, ttl: Option<std::time::Duration>) -> ExitCode {
    let preview = &cfg.proxy.edge.preview;
    let Some(svc) = cfg.services.get(service) else {
        return fail(2, "unknown_service", format!("unknown service `{service}`"));
    };
    let (true, Some(secret)) = (preview.enabled, preview.secret.as_deref()) else {
        return fail(
            2,
            "preview_off",
            format!(
                "preview by header or cookie is off: set [proxy.preview] enabled = true \
                 and a secret (secret_env = {:?})",
                preview.secret_env
            ),
        );
    };
    let ttl = ttl.unwrap_or(preview.token_ttl).min(preview.token_ttl);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expires = now + ttl.as_secs().max(1);
    let token = crate::proxy::preview::sign(secret, service, expires);
    let host = svc
        .hosts
        .first()
        .cloned()
        .or_else(|| svc.listen.map(|l| l.to_string()))
        .unwrap_or_else(|| "localhost".into());
    if mode().json {
        json_out(&json!({
            "token": token,
            "expires_at": expires,
            "header": cfg.proxy.preview_header,
            "cookie": cfg.proxy.preview_cookie,
        }));
        return ExitCode::SUCCESS;
    }
    println!("{token}");
    if mode().quiet {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "valid for {} (until Unix time {expires}); send it as\n  {}: {token}\nor as the cookie\n  {}={token}\ne.g. curl -H '{}: {token}' http://{host}/",
        humantime::format_duration(std::time::Duration::from_secs(expires - now)),
        cfg.proxy.preview_header,
        cfg.proxy.preview_cookie,
        cfg.proxy.preview_header,
    );
    ExitCode::SUCCESS
}
