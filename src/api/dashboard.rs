//! The web dashboard: one page, its script and its style sheet, built into the binary
//! and served by the API's listener at `/dashboard`.
//!
//! Why it is only static files: everything it shows comes from the API it was served
//! by (`GET /api/v1/services`, polled once a second) and every button is one API call
//! with the bearer token, so the dashboard can neither show nor do anything the API
//! would not, and it needs no second authentication scheme. The files hold no data,
//! so they are open like `/healthz` (the Host check still applies: a page reached
//! through DNS rebinding is refused); the data calls need the token whenever the API
//! asks for it.
//!
//! The headers keep a hostile page away from the buttons: no framing (clickjacking),
//! scripts, styles and connections from this origin only, no inline script (the
//! script writes every value as text, never as HTML), no referrer, no sniffing.

use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::routes::{Access, Answer, Route};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// What the page may load and where it may connect: this origin, nothing inline.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// One served file: path, operation id, summary, documented media type, what it is,
/// its text and the `Content-Type` it is served with.
type File = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const FILES: [File; 3] = [
    (
        "/dashboard",
        "dashboard",
        "The web dashboard (live status, traffic, per-slot figures and actions).",
        "text/html",
        "The page; its data come from this API, read with the token when needed.",
        INDEX,
        "text/html; charset=utf-8",
    ),
    (
        "/dashboard/app.js",
        "dashboardScript",
        "The dashboard's script.",
        "text/javascript",
        "The script the page loads.",
        SCRIPT,
        "text/javascript; charset=utf-8",
    ),
    (
        "/dashboard/app.css",
        "dashboardStyle",
        "The dashboard's style sheet.",
        "text/css",
        "The style sheet the page loads.",
        STYLE,
        "text/css; charset=utf-8",
    ),
];

/// The dashboard's routes (added to the API's table in `routes.rs`).
pub(super) fn table() -> Vec<Route> {
    FILES
        .iter()
        .map(
            |&(path, operation_id, summary, media, description, body, content_type)| Route {
                method: Method::GET,
                path,
                operation_id,
                summary,
                access: Access::Open,
                params: &[],
                body: None,
                answer: Answer {
                    status: 200,
                    content_type: media,
                    schema: None,
                    description,
                },
                handler: get(move || async move { asset(body, content_type) }),
            },
        )
        .collect()
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary's page is picked up at the next load (they are small).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_writes_no_html_from_data() {
        // The page names its script and style sheet by the paths served here.
        assert!(INDEX.contains(r#"src="/dashboard/app.js""#));
        assert!(INDEX.contains(r#"href="/dashboard/app.css""#));
        // No inline script or style: the CSP would refuse them.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        // Values reach the page as text nodes only.
        for risky in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(risky), "app.js uses {risky}");
        }
        // The token is a bearer header, never a cookie.
        assert!(SCRIPT.contains("Authorization") && !SCRIPT.contains("document.cookie"));
    }
}
