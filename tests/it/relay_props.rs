//! Property tests of the relay: random interleavings of data, control and close frames
//! from both peers, with readers that pause so that writes block, over real sockets.
//!
//! Each case runs a fresh wsgate between a scripted raw client and a scripted raw backend
//! ([`scripted`]); both write generated frames at generated moments while they read and
//! strictly check ([`crate::support::strict`]) everything wsgate sends them. Properties:
//! - every frame on either wire is legal (masking per direction, RSV, opcodes, control
//!   frames, Close payloads, continuation order, nothing after the Close);
//! - every frame a peer sent before its Close (or its violation, or its FIN) reaches the
//!   other peer, in order and intact, unless the receiver itself was cut off (it vanished,
//!   or broke the protocol as the backend); what does arrive is always a prefix;
//! - each peer that did not vanish gets exactly one Close before wsgate ends its stream: the
//!   other peer's Close when both behaved, else one of the codes the rules allow;
//! - wsgate ends both streams, reports the connection, and its gauge returns to 0.
//!
//! Inputs are plain data ([`Case`]: a list of steps per peer), so proptest shrinks them.
//! `PROPTEST_CASES` sets the number of cases (default [`DEFAULT_CASES`]); the seed is fixed
//! unless `PROPTEST_RNG_SEED` is set.

use std::time::Duration;

use proptest::prop_assert;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use crate::support::frame::{self, Frame};
use crate::support::proxy::Proxy;
use crate::support::relay_cases::{Case, End, MAX_FRAME, case, plan};
use crate::support::scripted::{self, Ended, PeerLog, ScriptedBackend};

/// Cases per run without `PROPTEST_CASES`.
const DEFAULT_CASES: u32 = 64;
/// The seed without `PROPTEST_RNG_SEED`: the same cases on every run.
const SEED: u64 = 0x5747_6174_6552_656c;
/// Most time one case's peers may take; a passing case takes a fraction of it.
const CASE_LIMIT: Duration = Duration::from_secs(8);

/// wsgate in front of `backend`: keepalive off, a close timeout well above the pauses.
fn config(backend: &ScriptedBackend) -> String {
    format!(
        "workers: 1\nlisteners:\n  - bind: \"127.0.0.1:0\"\n\
         defaults: {{ close_timeout: 3s, handshake_timeout: 2s, ping_interval: 0s, max_frame_bytes: {MAX_FRAME} }}\n\
         routes:\n  - name: props\n    path: /p\n    backends: [\"ws://{}/ws\"]\n",
        backend.addr
    )
}

/// Runs one case and checks every property.
async fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let backend = ScriptedBackend::bind();
    let mut proxy = Proxy::start(&config(&backend)).await;
    let ((client_io, client_left), (backend_io, backend_left)) = tokio::join!(
        scripted::connect_client(proxy.addr(), "/p"),
        backend.accept()
    );
    let deadline = tokio::time::Instant::now() + CASE_LIMIT;
    let client_script = plan(&case.client, true, &case.backend);
    let backend_script = plan(&case.backend, false, &case.client);
    let (client, backend_log) = tokio::join!(
        scripted::run(client_io, client_left, true, client_script, deadline),
        scripted::run(backend_io, backend_left, false, backend_script, deadline),
    );
    let mut faults = Vec::new();
    check_peer("client", &client, &backend_log, case, true, &mut faults);
    check_peer("backend", &backend_log, &client, case, false, &mut faults);
    match tokio::time::timeout(CASE_LIMIT, proxy.reports.recv()).await {
        Ok(Ok(report)) => {
            let normal = !abnormal(&client) && !abnormal(&backend_log);
            if normal && report.outcome.as_str() != "normal" {
                faults.push(format!(
                    "outcome {} for a normal close: {report:?}",
                    report.outcome.as_str()
                ));
            }
            let (msgs, bytes) = data_counts(&client.sent);
            if normal && (report.msgs_in, report.bytes_in) != (msgs, bytes) {
                faults.push(format!("report counts in ({msgs}, {bytes}): {report:?}"));
            }
            let (msgs, bytes) = data_counts(&backend_log.sent);
            if normal && (report.msgs_out, report.bytes_out) != (msgs, bytes) {
                faults.push(format!("report counts out ({msgs}, {bytes}): {report:?}"));
            }
        }
        other => faults.push(format!("no close report: {other:?}")),
    }
    proxy.assert_drained().await;
    prop_assert!(
        faults.is_empty(),
        "{}\nclient ended {:?}, got {} frames; backend ended {:?}, got {} frames",
        faults.join("\n"),
        client.ended,
        client.received.len(),
        backend_log.ended,
        backend_log.received.len()
    );
    Ok(())
}

/// A peer that ended without a proper Close (wsgate then closes with codes of its own).
fn abnormal(log: &PeerLog) -> bool {
    matches!(
        log.ended,
        Ended::Vanished | Ended::Violated | Ended::Unfinished(_)
    )
}

/// Messages and payload bytes among data frames (what the close report counts).
fn data_counts(frames: &[Frame]) -> (u64, u64) {
    let data = frames.iter().filter(|f| !f.is_control());
    let msgs = data.clone().filter(|f| f.fin).count() as u64;
    (msgs, data.map(|f| f.payload.len() as u64).sum())
}

/// The properties from `me`'s side: what it got from wsgate, against what `other` sent.
fn check_peer(
    name: &str,
    me: &PeerLog,
    other: &PeerLog,
    case: &Case,
    is_client: bool,
    faults: &mut Vec<String>,
) {
    faults.extend(me.faults.iter().map(|f| format!("{name}: {f}")));
    if let Ended::Unfinished(why) = &me.ended {
        faults.push(format!("{name} could not finish its script: {why}"));
    }
    let (closes, data): (Vec<&Frame>, Vec<&Frame>) =
        me.received.iter().partition(|f| f.opcode == frame::CLOSE);
    let same = |a: &Frame, b: &Frame| {
        (a.fin, a.rsv, a.opcode, &a.payload) == (b.fin, b.rsv, b.opcode, &b.payload)
    };
    if let Some(i) = data.iter().zip(&other.sent).position(|(a, b)| !same(a, b)) {
        faults.push(format!(
            "{name}: frame #{i} differs from the one sent: {:?} vs {:?}",
            data[i], other.sent[i]
        ));
    }
    if data.len() > other.sent.len() {
        faults.push(format!(
            "{name}: {} frames received, {} sent",
            data.len(),
            other.sent.len()
        ));
    }
    // Only the receiver's own end can cut what it gets: it vanished, or broke the protocol
    // as the backend (then wsgate closes it at once).
    let cut = me.ended == Ended::Vanished || (me.ended == Ended::Violated && !is_client);
    if !cut && data.len() < other.sent.len() {
        faults.push(format!(
            "{name}: lost frames: got {} of {}",
            data.len(),
            other.sent.len()
        ));
    }
    if !me.eof {
        faults.push(format!("{name}: wsgate did not end its stream"));
    }
    if me.ended == Ended::Vanished {
        return;
    }
    let [close] = closes[..] else {
        faults.push(format!("{name}: {} Close frames received", closes.len()));
        return;
    };
    if !abnormal(me) && !abnormal(other) {
        if Some(&close.payload[..]) != other.close_sent() {
            faults.push(format!(
                "{name}: Close {:?} is not the one the peer sent {:?}",
                close.payload,
                other.close_sent()
            ));
        }
        return;
    }
    let code = close
        .payload
        .get(..2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]));
    let gone = if is_client { 1014 } else { 1001 };
    let mine = if is_client {
        &case.client
    } else {
        &case.backend
    };
    let my_violation = match (me.ended == Ended::Violated, &mine.end) {
        (true, End::Violate(bad)) => Some(bad.code()),
        _ => None,
    };
    let allowed = Some(&close.payload[..]) == other.close_sent()
        || (abnormal(other) && code == Some(gone))
        || (my_violation.is_some() && code == my_violation);
    if !allowed {
        faults.push(format!(
            "{name}: Close {code:?} {:?} not allowed (other ended {:?}, violation code {my_violation:?})",
            String::from_utf8_lossy(close.payload.get(2..).unwrap_or_default()),
            other.ended
        ));
    }
}

/// The proptest configuration: [`DEFAULT_CASES`] or `PROPTEST_CASES`, a fixed seed unless
/// `PROPTEST_RNG_SEED` is set, failures kept beside this file for replay.
fn runner_config() -> Config {
    let env = |name| {
        std::env::var(name)
            .ok()
            .and_then(|v: String| v.trim().parse::<u64>().ok())
    };
    let defaults = Config::default();
    Config {
        cases: env("PROPTEST_CASES").map_or(DEFAULT_CASES, |n| n as u32),
        rng_seed: env("PROPTEST_RNG_SEED").map_or(RngSeed::Fixed(SEED), RngSeed::Fixed),
        max_shrink_iters: 256,
        source_file: Some(file!()),
        ..defaults
    }
}

#[test]
fn relay_keeps_both_wires_legal_and_loses_nothing() {
    let mut runner = TestRunner::new(runner_config());
    let result = runner.run(&case(), |case| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        runtime.block_on(run_case(&case))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
