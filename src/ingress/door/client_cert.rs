//! Client certificates at the door: the route's header for the certificate's subject and
//! SANs is always taken out of the client's request (a client cannot claim a certificate
//! it did not present), set from the certificate the TLS handshake verified, and a route
//! with `client_cert: required` refuses a request without one.
//!
//! The refusal is 403, as Envoy's RBAC filter gives for a missing principal: 401 would
//! need a `WWW-Authenticate` challenge, and there is none for a TLS certificate (the
//! client must reconnect with one); nginx's own 400/496 are not statuses a client knows.

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};

use super::Refusal;
use crate::config::forward_auth::ClientCertPolicy;
use crate::shared::client::ClientInfo;
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// Sets the route's certificate header of `req` from `client`'s certificate, or refuses.
// The door's one error type, made once per refused request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub(crate) fn check<B>(
    route: &Route,
    req: &mut Request<B>,
    client: &ClientInfo,
    state: &ProxyState,
) -> Result<(), Refusal> {
    let name = &route.config.client_cert_header;
    let headers = req.headers_mut();
    headers.remove(name);
    match &client.cert {
        Some(cert) => {
            headers.insert(name.clone(), cert.summary.clone());
            Ok(())
        }
        None if route.config.client_cert == ClientCertPolicy::Required => {
            state
                .metrics
                .auth
                .failure(route.name(), "client_cert_required");
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Err(Refusal {
                status: StatusCode::FORBIDDEN,
                headers,
                body: Bytes::from_static(b"a client certificate is required\n"),
                reason: "client_cert_required",
            })
        }
        None => Ok(()),
    }
}
