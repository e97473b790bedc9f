//! What the connection's last Host came to, kept for the next request with the same one.

use hyper::Request;
use hyper::header;

use crate::backend::http::raw::encode_proxy;
use crate::proto::headers::ProxyHeaders;
use crate::shared::client::ClientInfo;

/// What the connection's last request's Host came to, for the next one with the same
/// Host (a client sends one Host for the whole connection): the Host checked, and
/// wsgate's forwarding headers for it (while the client hop is the client itself).
#[derive(Default)]
pub(super) struct HostCache {
    /// The Host value as received; empty while nothing is kept.
    raw: Vec<u8>,
    /// It checked, as `requested_host` gives it.
    host: String,
    /// The forwarding headers' field lines for it; empty until made.
    proxy: Vec<u8>,
}

impl HostCache {
    /// The checked Host of `req`, if it is the one kept (its only Host, and an
    /// origin-form target, as every request here has).
    pub(super) fn host_of(&mut self, req: &Request<()>) -> Option<String> {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(h), None) if !self.raw.is_empty() && h.as_bytes() == self.raw => {
                Some(self.host.clone())
            }
            // Another Host: checked anew, and kept once its forwarding lines are made.
            _ => {
                self.raw.clear();
                self.proxy.clear();
                self.host.clear();
                None
            }
        }
    }

    /// wsgate's forwarding headers for a request to `host` from `client`, as field lines:
    /// the kept ones when the client hop is the client (no trusted chain), else made
    /// into `fresh`.
    pub(super) fn proxy_lines<'a>(
        &'a mut self,
        req: &Request<()>,
        host: &str,
        client: &ClientInfo,
        fresh: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        let make = |out: &mut Vec<u8>| {
            let proxy =
                ProxyHeaders::new(client.peer.ip(), &client.forwarding, client.tls, Some(host));
            encode_proxy(&proxy, out);
        };
        let direct =
            client.forwarding.prior.is_none() && client.forwarding.client == client.peer.ip();
        if !direct {
            make(fresh);
            return fresh;
        }
        if self.raw.is_empty()
            && let Some(h) = req.headers().get(header::HOST)
        {
            self.raw.extend_from_slice(h.as_bytes());
            self.host.push_str(host);
        }
        if self.host != host {
            make(fresh);
            return fresh;
        }
        if self.proxy.is_empty() {
            make(&mut self.proxy);
        }
        &self.proxy
    }
}
