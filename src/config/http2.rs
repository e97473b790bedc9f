//! HTTP/2 on TLS listeners: the protocols a listener offers in ALPN, and the limits of
//! every HTTP/2 connection (the `http2` section).

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::parse::{duration, h2_frame, h2_window};

/// A protocol a TLS listener offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Alpn {
    /// HTTP/2 (RFC 9113), WebSockets over it by extended CONNECT (RFC 8441).
    #[serde(rename = "h2")]
    H2,
    /// HTTP/1.1, WebSockets by `Upgrade` (RFC 6455).
    #[serde(rename = "http/1.1")]
    Http11,
}

impl Alpn {
    /// The protocol's ALPN identifier (RFC 7301).
    pub fn id(self) -> &'static [u8] {
        match self {
            Alpn::H2 => b"h2",
            Alpn::Http11 => b"http/1.1",
        }
    }
}

/// What a TLS listener offers when its `alpn` is not given: HTTP/2 first.
pub const DEFAULT_ALPN: [Alpn; 2] = [Alpn::H2, Alpn::Http11];

/// A listener's `alpn`: at least one protocol, each once.
pub(super) fn alpn_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Alpn>>, D::Error> {
    let list = Vec::<Alpn>::deserialize(d)?;
    if list.is_empty() {
        return Err(de::Error::custom(
            "alpn: expected at least one of `h2`, `http/1.1`",
        ));
    }
    if list.len() == 2 && list[0] == list[1] {
        return Err(de::Error::custom("alpn: expected each protocol once"));
    }
    Ok(Some(list))
}

/// The limits of every HTTP/2 client connection. The header list limit is
/// `limits.max_header_bytes`, as for HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Streams (WebSockets and requests) one connection may have open at once
    /// (SETTINGS_MAX_CONCURRENT_STREAMS). Default 256.
    pub max_concurrent_streams: u32,
    /// Flow-control window of each stream: what a client may send on one stream before
    /// wsgate has read it, so the most one stream whose backend is slow buffers.
    /// 64KiB to 2GiB−1. Default 256KiB.
    #[serde(deserialize_with = "h2_window")]
    pub initial_stream_window_bytes: u64,
    /// Flow-control window of the whole connection: what a client may have sent, across
    /// its streams, that wsgate has not read yet. Streams whose backends stall hold their
    /// part of it, so it is the most one connection buffers, and the others stall only once
    /// it is used up (32 stalled streams with the defaults). 64KiB to 2GiB−1. Default 8MiB.
    #[serde(deserialize_with = "h2_window")]
    pub initial_connection_window_bytes: u64,
    /// Largest frame payload a client may send (SETTINGS_MAX_FRAME_SIZE). 16KiB to
    /// 16MiB−1. Default 16KiB.
    #[serde(deserialize_with = "h2_frame")]
    pub max_frame_bytes: u64,
    /// PING a connection after this long without a frame from it, and close it when no
    /// answer comes within `keepalive_timeout`; 0 = off (each WebSocket already pings its
    /// own client). Default 0s.
    #[serde(deserialize_with = "duration")]
    pub keepalive_interval: Duration,
    /// How long an answer to the keepalive PING may take. Default 20s.
    #[serde(deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
    /// Streams a client opened and reset before wsgate accepted them, at most at once
    /// (rapid reset, CVE-2023-44487); more ends the connection with GOAWAY
    /// (ENHANCE_YOUR_CALM). Default 20.
    pub max_pending_accept_reset_streams: usize,
    /// Streams wsgate itself reset because the client broke the protocol on them, at most
    /// per connection; more ends it with GOAWAY. Default 1024.
    pub max_local_error_reset_streams: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_concurrent_streams: 256,
            initial_stream_window_bytes: 256 << 10,
            initial_connection_window_bytes: 8 << 20,
            max_frame_bytes: 16 << 10,
            keepalive_interval: Duration::ZERO,
            keepalive_timeout: Duration::from_secs(20),
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
        }
    }
}

impl Http2Config {
    /// What RFC 9113 §6.5.2 and §6.9.2 allow, checked once the file is read.
    pub(super) fn check(&self) -> Result<(), String> {
        const MIN_WINDOW: u64 = 65_535;
        const MAX_WINDOW: u64 = (1 << 31) - 1;
        for (name, v) in [
            (
                "initial_stream_window_bytes",
                self.initial_stream_window_bytes,
            ),
            (
                "initial_connection_window_bytes",
                self.initial_connection_window_bytes,
            ),
        ] {
            if !(MIN_WINDOW..=MAX_WINDOW).contains(&v) {
                return Err(format!(
                    "http2.{name}: {v} bytes is outside what HTTP/2 allows; expected 64KiB to 2GiB−1"
                ));
            }
        }
        if !((16 << 10)..(16 << 20)).contains(&self.max_frame_bytes) {
            return Err(format!(
                "http2.max_frame_bytes: {} bytes is outside what HTTP/2 allows; expected 16KiB to 16MiB−1",
                self.max_frame_bytes
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(
                "http2.max_concurrent_streams: 0 would refuse every request; expected at least 1 \
                 (default 256)"
                    .into(),
            );
        }
        Ok(())
    }
}
