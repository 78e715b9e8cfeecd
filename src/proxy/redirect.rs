//! A plaintext `redirect_from` listener: every request gets a `308 Permanent
//! Redirect` to the same host and path on HTTPS, except ACME HTTP-01 challenges
//! (`/.well-known/acme-challenge/<token>`), answered from the shared
//! [`Challenges`](super::tls::Challenges) map (404 for an unknown token).
//!
//! Never an open redirect: the `Location` is `https://` + the request's own `Host`
//! (validated by RFC 9110's rules, port replaced by the HTTPS listener's) + the
//! request's origin-form path and query. A request without a valid `Host` gets 400.
//! 308 (RFC 9110 §15.4.9) keeps the method and body, unlike 301.
//!
//! Only hosts the HTTPS listener completes a handshake for are redirected: with
//! `unknown_sni = "refuse"`, a host no certificate names gets `421 Misdirected
//! Request` (RFC 9110 §15.5.20) instead of a redirect that could only end in a
//! failed handshake, so the listener is no redirector for names it does not serve.
//! With `unknown_sni = "default"` the default certificate answers every host, and
//! every valid host is redirected.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::ProxyBody;
use super::conn::{stopped, ConnState, ListenerCtx};
use super::headers::{host_without_port, valid_host};
use super::tls::challenge::HTTP01_PREFIX;
use super::tls::{Challenges, RedirectTarget};
use super::Proxy;

/// Serves one connection of a redirect listener.
pub(super) async fn serve(
    proxy: &Arc<Proxy>,
    ctx: &Arc<ListenerCtx>,
    stream: TcpStream,
    peer: SocketAddr,
    target: RedirectTarget,
) {
    let challenges = proxy.settings().tls.challenges().clone();
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let resp = answer(&req, &challenges, target.port, |h| target.serves(h));
        async move { Ok::<_, Infallible>(resp) }
    });
    let mut state = ctx.state.clone();
    let conn = ctx.http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "redirect connection ended with an error");
            }
            return;
        }
        _ = state.wait_for(|s| matches!(s, ConnState::Draining | ConnState::Stopped)) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopped(&mut state) => {}
    }
}

/// The answer to one request (pure, so it is unit-tested without a socket).
pub(super) fn answer<B>(
    req: &Request<B>,
    challenges: &Challenges,
    https_port: u16,
    served: impl Fn(&str) -> bool,
) -> Response<ProxyBody> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(HTTP01_PREFIX) {
        return match challenges.http01(token) {
            Some(key_auth) => {
                let mut r = Response::new(ProxyBody::local(Bytes::from(key_auth)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            None => plain(StatusCode::NOT_FOUND, "no such challenge\n"),
        };
    }
    let host = req
        .headers()
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()))
        .filter(|h| valid_host(h))
        .and_then(|h| std::str::from_utf8(h).ok());
    let Some(host) = host else {
        return plain(StatusCode::BAD_REQUEST, "missing or invalid Host header\n");
    };
    let host = host_without_port(host);
    if !served(host) {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            "this host is not served over HTTPS here\n",
        );
    }
    if !path.starts_with('/') {
        return plain(StatusCode::BAD_REQUEST, "bad request target\n");
    }
    let mut location = format!("https://{host}");
    if https_port != 443 {
        location.push_str(&format!(":{https_port}"));
    }
    location.push_str(path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            let mut r = Response::new(ProxyBody::local(Bytes::new()));
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => plain(StatusCode::BAD_REQUEST, "bad request target\n"),
    }
}

fn plain(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local(Bytes::from_static(msg.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(target);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    }

    fn location(r: &Response<ProxyBody>) -> &str {
        r.headers()[header::LOCATION].to_str().unwrap()
    }

    #[test]
    fn requests_go_to_the_same_host_and_path_on_https_with_308() {
        let c = Challenges::default();
        let r = answer(&get("/a/b?x=1", Some("shop.example:80")), &c, 443, |_| true);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(location(&r), "https://shop.example/a/b?x=1");
        let r = answer(&get("/", Some("shop.example")), &c, 8443, |_| true);
        assert_eq!(location(&r), "https://shop.example:8443/");
        // Absolute-form: the path only, the Host header's host.
        let r = answer(
            &get("http://evil.example/x", Some("shop.example")),
            &c,
            443,
            |_| true,
        );
        assert_eq!(location(&r), "https://shop.example/x");
    }

    #[test]
    fn a_missing_or_invalid_host_is_refused_not_redirected() {
        let c = Challenges::default();
        for host in [None, Some("evil.example/path"), Some("a@b"), Some("")] {
            let r = answer(&get("/", host), &c, 443, |_| true);
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{host:?}");
        }
    }

    #[test]
    fn acme_challenges_are_answered_not_redirected() {
        let c = Challenges::default();
        c.set_http01("tok123", "tok123.thumb");
        let r = answer(
            &get("/.well-known/acme-challenge/tok123", Some("a.example")),
            &c,
            443,
            |_| true,
        );
        assert_eq!(r.status(), StatusCode::OK);
        let r = answer(
            &get("/.well-known/acme-challenge/other", Some("a.example")),
            &c,
            443,
            |_| true,
        );
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        c.remove_http01("tok123");
        let r = answer(
            &get("/.well-known/acme-challenge/tok123", Some("a.example")),
            &c,
            443,
            |_| true,
        );
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_host_the_tls_listener_would_refuse_gets_421_not_a_redirect() {
        let c = Challenges::default();
        let served = |h: &str| h == "shop.example";
        let r = answer(&get("/a", Some("shop.example:80")), &c, 443, served);
        assert_eq!(location(&r), "https://shop.example/a");
        let r = answer(&get("/a", Some("other.example")), &c, 443, served);
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
        assert!(r.headers().get(header::LOCATION).is_none());
        // ACME challenges come first: a name being issued has no certificate yet.
        c.set_http01("tok", "tok.thumb");
        let challenge = get("/.well-known/acme-challenge/tok", Some("new.example"));
        assert_eq!(answer(&challenge, &c, 443, served).status(), StatusCode::OK);
    }
}
