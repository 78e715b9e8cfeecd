//! How the CLI's client reaches the daemon: plain HTTP, or HTTPS with the trust of
//! `crate::tls` (`[api] tls_ca_file`), with a TLS failure explained in one line.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;

use super::ClientError;
use crate::tls::{ClientTls, TlsClient};

#[derive(Clone)]
pub(super) enum Transport {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(
        Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
        ClientTls,
    ),
    /// The TLS setup failed; every call says why.
    Broken(String),
}

impl Transport {
    pub(super) fn tls(settings: &ClientTls) -> Transport {
        match build(settings) {
            Ok(client) => Transport::Tls(client, settings.clone()),
            Err(e) => Transport::Broken(e),
        }
    }

    pub(super) fn request(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<ResponseFuture, ClientError> {
        match self {
            Transport::Plain(c) => Ok(c.request(req)),
            Transport::Tls(c, _) => Ok(c.request(req)),
            Transport::Broken(why) => Err(ClientError::Tls(why.clone())),
        }
    }

    /// One line for a failed call: a TLS failure as `tls::explain` says it (naming
    /// `tls_ca_file` to fix it), anything else with its causes.
    pub(super) fn explain(&self, e: &hyper_util::client::legacy::Error) -> String {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut chain = Vec::new();
        while let Some(err) = source {
            if let Transport::Tls(_, settings) = self {
                if let Some(tls) = crate::tls::find_tls_error(err) {
                    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
                    let server = settings.server_name.as_deref().unwrap_or("the API");
                    return crate::tls::explain(&io, server, settings)
                        .replace("add ca_file", "set [api] tls_ca_file");
                }
            }
            chain.push(err.to_string());
            source = err.source();
        }
        chain.dedup();
        chain.join(": ")
    }
}

fn build(
    settings: &ClientTls,
) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, String> {
    let tls = TlsClient::for_settings(settings).map_err(|e| e.to_string())?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls.config()).clone())
        .https_only();
    let builder = match &settings.server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(
            tls.server_name(name).map_err(|e| e.to_string())?,
        )),
        None => builder,
    };
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(3)));
    http.enforce_http(false);
    let connector = builder.enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}
