//! The per-connection tuning keys, each declared once in [`tuning_keys!`]: its doc, type,
//! default and deserializer. From that one table come [`Tuning`] (the `defaults` section
//! and a route's effective values), its `impl Default`, [`TuningOverrides`] (a route's
//! optional values), their merge, and the optional keys of a route's raw mapping.

use std::time::Duration;

use serde::Deserialize;

use super::admission::fraction;
use super::parse::{
    duration, nonzero_close, nonzero_frame, nonzero_handshake, nonzero_http_connect,
    nonzero_http_pool_idle, nonzero_http_response, nonzero_message, plain,
};

/// The table of tuning keys: `doc; name: type = default, "deserializer";` per key.
///
/// It hands the table to the macro `$then` (with `$extra` tokens first), so each thing
/// generated from the keys is written once as a macro and the keys once here.
macro_rules! tuning_keys {
    ($then:ident! { $($extra:tt)* }) => {
        $then! {
            { $($extra)* }
            /// Keepalive ping after this long without a frame from a peer; 0 = no pings.
            /// Default 20s.
            ping_interval: Duration = Duration::from_secs(20), "duration";
            /// A peer that does not answer our ping within this is dead; must be above 0
            /// while pings are on (`validate` checks it). Default 10s.
            ping_timeout: Duration = Duration::from_secs(10), "duration";
            /// Close after this long without a data frame either way; 0 = off. Default 0s.
            idle_timeout: Duration = Duration::ZERO, "duration";
            /// How long to wait for the Close reply before dropping the sockets; above 0
            /// (0 would drop them before any reply). Default 5s.
            close_timeout: Duration = Duration::from_secs(5), "nonzero_close";
            /// A frame that cannot be written to a peer within this closes the connection
            /// (the peer stopped reading); 0 = off. Default 30s.
            write_timeout: Duration = Duration::from_secs(30), "duration";
            /// A frame must arrive whole within this of its first byte (else close 1008 to
            /// its sender); time between frames does not count. 0 = off. Default 30s.
            frame_timeout: Duration = Duration::from_secs(30), "duration";
            /// Backend connect plus backend upgrade must finish within this (else 504);
            /// above 0 (0 would make every upgrade 504). Default 10s.
            handshake_timeout: Duration = Duration::from_secs(10), "nonzero_handshake";
            /// Largest frame payload accepted from either peer (else close 1009); above 0.
            /// Default 16MiB.
            max_frame_bytes: u64 = 16 << 20, "nonzero_frame";
            /// Largest message across its fragments (else close 1009); above 0. Default 64MiB.
            max_message_bytes: u64 = 64 << 20, "nonzero_message";
            /// Most frames one message may have, its first frame and continuations together
            /// (else close 1009): zero-length continuations never reach `max_message_bytes`.
            /// 0 = off. Default 1048576: the default `max_message_bytes` in 64-byte
            /// fragments, which real clients send (Autobahn's 9.3 and 9.4 cases do).
            max_message_frames: u32 = 1 << 20, "plain";
            /// Check that text messages are UTF-8 (else close 1007). Default true.
            validate_utf8: bool = true, "plain";
            /// Messages per second a client may send (bursts up to one second's worth);
            /// over it the client gets close 1008. Every data frame counts, so a message in
            /// N fragments counts N and a message that never ends is limited too. 0 = off.
            /// Default 0.
            max_message_rate: u32 = 0, "plain";
            /// Plain HTTP: a new backend connection (TCP, and TLS for `wss://`) must be
            /// up within this (else the next backend, then 502 or 504). Default 10s.
            http_connect_timeout: Duration = Duration::from_secs(10), "nonzero_http_connect";
            /// Plain HTTP: the backend's response head must arrive within this of the
            /// request being sent (else 504). Default 60s.
            http_response_timeout: Duration = Duration::from_secs(60), "nonzero_http_response";
            /// Plain HTTP: a request or response body that moves no byte for this long is
            /// cut (logged, outcome `timeout`); 0 = off. Default 60s.
            http_idle_timeout: Duration = Duration::from_secs(60), "duration";
            /// Plain HTTP: idle keep-alive connections kept per backend; 0 = no reuse.
            /// Default 256: under it, a load more concurrent than the pool keeps closing
            /// and reopening backend connections (at 32, 50 clients reopened ~2,500 a
            /// second and halved the rate); an idle connection costs a few KiB.
            http_pool_idle_max: u32 = 256, "plain";
            /// Plain HTTP: an idle keep-alive backend connection is closed after this.
            /// Default 60s.
            http_pool_idle_timeout: Duration = Duration::from_secs(60), "nonzero_http_pool_idle";
            /// A WebSocket is closed with 1001 "lifetime" this long after it opened, so
            /// clients re-authenticate and load spreads to backends added since; 0 = off.
            /// Default 0s.
            max_lifetime: Duration = Duration::ZERO, "duration";
            /// Each WebSocket's lifetime is drawn uniformly within this fraction either side
            /// of `max_lifetime` (0.1 or 10%: 1h gives 54m to 66m), so connections opened
            /// together do not all reconnect together; from 0 to below 1. Default 0.1.
            max_lifetime_jitter: f64 = 0.1, "fraction";
        }
    };
}
pub(super) use tuning_keys;

/// Generates [`Tuning`], its defaults, [`TuningOverrides`] with its merge, and [`key`].
macro_rules! define_tuning {
    ({} $( $(#[$doc:meta])* $name:ident: $ty:ty = $default:expr, $de:tt; )*) => {
        /// Per-connection timeouts and limits; every field has a default and every route
        /// may override it.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Tuning {
            $( $(#[$doc])* #[serde(deserialize_with = $de)] pub $name: $ty, )*
        }

        impl Default for Tuning {
            fn default() -> Self {
                Tuning { $( $name: $default, )* }
            }
        }

        /// The optional per-route overrides of [`Tuning`] (same names, same units).
        ///
        /// Its fields sit directly in the route's mapping; serde's `flatten` is avoided
        /// because it buffers the input and loses the line and column of errors.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct TuningOverrides {
            $( $(#[$doc])* pub $name: Option<$ty>, )*
        }

        impl TuningOverrides {
            /// The defaults with this route's overrides applied.
            pub fn apply(&self, base: &Tuning) -> Tuning {
                Tuning { $( $name: self.$name.unwrap_or(base.$name), )* }
            }
        }

        /// One wrapper per key, read by that key's deserializer, so a route's optional
        /// key is checked exactly like the same key in `defaults`.
        #[allow(non_camel_case_types)]
        pub(super) mod key {
            use super::*;
            $(
                #[doc = concat!("The route key `", stringify!($name), "`.")]
                #[derive(Deserialize)]
                #[serde(transparent)]
                pub struct $name(#[serde(deserialize_with = $de)] pub $ty);
            )*
        }
    };
}

tuning_keys!(define_tuning! {});

/// Generates [`Tuning::entries`].
macro_rules! tuning_entries {
    ({} $( $(#[$doc:meta])* $name:ident: $ty:ty = $default:expr, $de:tt; )*) => {
        impl Tuning {
            /// Every key with its value as `Debug` shows it (`20s`, `16777216`, `true`), in
            /// table order: what the admin API's `/api/config` reports.
            pub fn entries(&self) -> Vec<(&'static str, String)> {
                vec![ $( (stringify!($name), format!("{:?}", self.$name)), )* ]
            }
        }
    };
}

tuning_keys!(tuning_entries! {});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = Tuning::default();
        let route = TuningOverrides {
            ping_interval: Some(Duration::ZERO),
            max_message_rate: Some(5),
            ..TuningOverrides::default()
        };
        let merged = route.apply(&base);
        assert_eq!(merged.ping_interval, Duration::ZERO);
        assert_eq!(merged.max_message_rate, 5);
        assert_eq!(merged.ping_timeout, base.ping_timeout);
        assert_eq!(TuningOverrides::default().apply(&base), base);
    }
}
