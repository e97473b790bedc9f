//! The handles a route and a connection resolve once, and the finite label sets they use.

use std::sync::{Arc, OnceLock};

use prometheus::{Histogram, IntCounter, IntGauge};

use crate::proto::frame::OpCode;
use crate::shared::report::{ClosedBy, Outcome};

/// `direction` label values: index 0 is client → backend, 1 is backend → client.
pub const DIRECTIONS: [&str; 2] = ["client_to_backend", "backend_to_client"];

/// Opcodes in the order of [`ConnMetrics::frames`].
pub(super) const OPCODES: [OpCode; 6] = [
    OpCode::Continuation,
    OpCode::Text,
    OpCode::Binary,
    OpCode::Close,
    OpCode::Ping,
    OpCode::Pong,
];

/// The `code` label of `wsgate_closes_total`: a registered code exactly, a private-use
/// range as its class, anything else `other`, so a peer choosing codes cannot create
/// more than this fixed set of series.
///
/// `None` (an empty Close) is `none`; 1006 never travels on the wire but is what the
/// report says when a peer vanished.
pub fn code_label(code: Option<u16>) -> &'static str {
    CODE_LABELS[code_index(code)]
}

/// The values of the close code label, in the order of [`code_index`].
pub(super) const CODE_LABELS: [&str; 19] = [
    "none", "1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009", "1010", "1011",
    "1012", "1013", "1014", "1015", "3xxx", "4xxx", "other",
];

/// Where a close code's label is in [`CODE_LABELS`].
pub(super) fn code_index(code: Option<u16>) -> usize {
    let Some(code) = code else { return 0 };
    match code {
        1000..=1003 => (code - 999) as usize,
        1005..=1015 => (code - 1000) as usize,
        3000..=3999 => 16,
        4000..=4999 => 17,
        _ => 18,
    }
}

/// A route's series for its connections' handshakes and ends, each resolved by the first
/// connection that needs it: looked up per connection, the four lookups of an end (each a
/// hash of its label values and a read lock) cost ~800 instructions (issue #17).
#[derive(Debug, Default)]
pub struct CloseCounters {
    pub(super) outcomes: [OnceLock<IntCounter>; Outcome::Admin as usize + 1],
    pub(super) protocols: [OnceLock<IntCounter>; 2],
    pub(super) closes: [[OnceLock<IntCounter>; CODE_LABELS.len()]; ClosedBy::Proxy as usize + 1],
    pub(super) duration: OnceLock<Histogram>,
    pub(super) handshake: OnceLock<Histogram>,
}

/// One connection's live counters, resolved once when it starts.
pub struct ConnMetrics {
    /// The route's handles; its active gauge is among them (one pointer for both).
    pub(super) counters: Arc<RouteCounters>,
    /// Whether frames are counted (`metrics.per_frame`).
    pub(super) per_frame: bool,
    /// Set once the connection left the active gauge (by `finish` or by drop).
    pub(super) finished: bool,
}

/// The `code` label of each status class.
pub(super) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`STATUS_CLASSES`] of `status`'s class.
pub(super) fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// A route's plain-HTTP series, each resolved by its first request.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub(super) classes: [OnceLock<IntCounter>; 5],
    pub(super) duration: OnceLock<Histogram>,
}

/// A route's per-direction counters, resolved once per route and shared by its connections.
pub struct RouteCounters {
    pub(super) active: IntGauge,
    pub(super) messages: [IntCounter; 2],
    pub(super) bytes: [IntCounter; 2],
    pub(super) frames: [[IntCounter; 6]; 2],
}

impl ConnMetrics {
    /// Counts one frame relayed in `direction` (0 or 1); `data_len` is its payload length
    /// when it is a data frame, and `ends_message` whether it completes a message.
    pub fn frame(
        &self,
        direction: usize,
        opcode: OpCode,
        data_len: Option<u64>,
        ends_message: bool,
    ) {
        if !self.per_frame {
            return;
        }
        let c = &self.counters;
        let i = OPCODES.iter().position(|o| *o == opcode).unwrap_or(0);
        c.frames[direction][i].inc();
        if let Some(len) = data_len {
            c.bytes[direction].inc_by(len);
            if ends_message {
                c.messages[direction].inc();
            }
        }
    }
}

impl ConnMetrics {
    /// Takes the connection out of the active gauge now, before its close report (the
    /// relay's state, which owns this, is dropped a little later; dropping it without
    /// `finish`, as an aborted task does, still leaves the gauge right).
    pub fn finish(&mut self) {
        if !std::mem::replace(&mut self.finished, true) {
            self.counters.active.dec();
        }
    }
}

impl Drop for ConnMetrics {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_labels_are_a_finite_set() {
        assert_eq!(code_label(None), "none");
        for code in (1000..=1003).chain(1005..=1015) {
            assert_eq!(code_label(Some(code)), code.to_string());
        }
        assert_eq!(code_label(Some(1004)), "other");
        assert_eq!(code_label(Some(1016)), "other");
        assert_eq!(code_label(Some(2999)), "other");
        assert_eq!(code_label(Some(3000)), "3xxx");
        assert_eq!(code_label(Some(3999)), "3xxx");
        assert_eq!(code_label(Some(4000)), "4xxx");
        assert_eq!(code_label(Some(4999)), "4xxx");
        assert_eq!(code_label(Some(5000)), "other");
        assert_eq!(code_label(Some(0)), "other");
        let all: std::collections::BTreeSet<_> =
            (0..=u16::MAX).map(|c| code_label(Some(c))).collect();
        assert_eq!(all.len(), 18, "15 registered codes, two classes, other");
    }
}
