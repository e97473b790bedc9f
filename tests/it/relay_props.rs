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

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use crate::support::frame::{self, Frame};
use crate::support::proxy::Proxy;
use crate::support::scripted::{self, Action, Ended, Finish, PeerLog, Script, ScriptedBackend};

/// Cases per run without `PROPTEST_CASES`.
const DEFAULT_CASES: u32 = 64;
/// The seed without `PROPTEST_RNG_SEED`: the same cases on every run.
const SEED: u64 = 0x5747_6174_6552_656c;
/// Most time one case's peers may take; a passing case takes a fraction of it.
const CASE_LIMIT: Duration = Duration::from_secs(8);
/// Most reading pause per peer and case: well under the close timeout, so a paused peer
/// still answers the close handshake in time.
const PAUSE_BUDGET_MS: u64 = 300;
/// `max_frame_bytes` of the route: above every frame generated, below [`Bad::TooBig`].
const MAX_FRAME: u64 = 1 << 20;

/// A control frame a peer sends of its own (payload length ≤ 125).
#[derive(Debug, Clone, Copy)]
enum Control {
    Ping(u8),
    Pong(u8),
}

/// One step of a peer's script.
#[derive(Debug, Clone)]
enum Step {
    /// A data message of about `len` bytes in `pieces` frames, with `inside` sent after its
    /// first frame.
    Message {
        text: bool,
        len: usize,
        pieces: u8,
        inside: Option<Control>,
    },
    Control(Control),
    /// Stop reading for this many ms.
    Pause(u8),
    /// Wait this many ms.
    Sleep(u8),
}

/// Something a peer does that wsgate must close the connection for.
#[derive(Debug, Clone, Copy)]
enum Bad {
    Rsv,
    LongPing,
    FragmentedPing,
    OrphanContinuation,
    /// A Text frame without FIN, then a Binary frame.
    DataInsideFragment,
    CloseCode(u16),
    OneByteClose,
    WrongMask,
    InvalidUtf8,
    /// A frame header over `max_frame_bytes`.
    TooBig,
}

impl Bad {
    /// The code wsgate closes the violating peer with.
    fn code(self) -> u16 {
        match self {
            Bad::InvalidUtf8 => 1007,
            Bad::TooBig => 1009,
            _ => 1002,
        }
    }
}

/// How a peer's script ends.
#[derive(Debug, Clone)]
enum End {
    /// A Close with this code (none: empty payload) and a reason of about this many bytes.
    Close(Option<u16>, u8),
    Vanish,
    Await,
    Violate(Bad),
}

/// One peer's generated script.
#[derive(Debug, Clone)]
struct Spec {
    steps: Vec<Step>,
    end: End,
}

/// One generated case: the client's script and the backend's.
#[derive(Debug, Clone)]
struct Case {
    client: Spec,
    backend: Spec,
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (0u8..=125).prop_map(Control::Ping),
        (0u8..=125).prop_map(Control::Pong)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let len = prop_oneof![8 => 0usize..=300, 2 => 1_000usize..=70_000, 1 => 200_000usize..=700_000];
    prop_oneof![
        8 => (any::<bool>(), len, 1u8..=4, proptest::option::weighted(0.3, control()))
            .prop_map(|(text, len, pieces, inside)| Step::Message { text, len, pieces, inside }),
        2 => control().prop_map(Step::Control),
        1 => (0u8..=150).prop_map(Step::Pause),
        2 => (0u8..=5).prop_map(Step::Sleep),
    ]
}

fn bad() -> impl Strategy<Value = Bad> {
    let code = prop::sample::select(vec![0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]);
    prop_oneof![
        Just(Bad::Rsv),
        Just(Bad::LongPing),
        Just(Bad::FragmentedPing),
        Just(Bad::OrphanContinuation),
        Just(Bad::DataInsideFragment),
        code.prop_map(Bad::CloseCode),
        Just(Bad::OneByteClose),
        Just(Bad::WrongMask),
        Just(Bad::InvalidUtf8),
        Just(Bad::TooBig),
    ]
}

fn end() -> impl Strategy<Value = End> {
    let code = proptest::option::weighted(
        0.9,
        prop::sample::select(vec![
            1000u16, 1001, 1002, 1003, 1007, 1008, 1011, 1012, 1014, 3000, 4000, 4999,
        ]),
    );
    prop_oneof![
        5 => (code, 0u8..=123).prop_map(|(c, r)| End::Close(c, r)),
        3 => Just(End::Await),
        1 => Just(End::Vanish),
        2 => bad().prop_map(End::Violate),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (prop::collection::vec(step(), 0..10), end()).prop_map(|(steps, end)| Spec { steps, end })
}

fn case() -> impl Strategy<Value = Case> {
    (spec(), spec()).prop_map(|(client, backend)| Case { client, backend })
}

/// About `len` bytes of valid UTF-8 with multi-byte characters, different per `seed`.
fn text(len: usize, seed: usize) -> Vec<u8> {
    const CHARS: [char; 6] = ['a', 'é', '€', '😀', ' ', 'Z'];
    let mut out = String::with_capacity(len + 4);
    let mut i = seed;
    while out.len() < len {
        out.push(CHARS[i % CHARS.len()]);
        i += 1;
    }
    out.into_bytes()
}

/// `len` bytes, different per `seed`.
fn bytes(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(7)) as u8)
        .collect()
}

/// The frames and actions a peer's spec stands for (`is_client`: masked, with keys that
/// vary). A case whose peers both await the other's Close has its client close instead.
fn plan(spec: &Spec, is_client: bool, other: &Spec) -> Script {
    let mut n = 0usize;
    let mut frame = |mut f: Frame| {
        n += 1;
        if is_client {
            f.mask = Some([n as u8, 0x5a, (n >> 8) as u8, 0xc3]);
        }
        f
    };
    let mut actions = Vec::new();
    let mut pause_left = PAUSE_BUDGET_MS;
    let seed = usize::from(!is_client) << 16;
    for (i, step) in spec.steps.iter().enumerate() {
        match *step {
            Step::Message {
                text: is_text,
                len,
                pieces,
                inside,
            } => {
                let payload = if is_text {
                    text(len, seed + i)
                } else {
                    bytes(len, seed + i)
                };
                let pieces = usize::from(pieces);
                for k in 0..pieces {
                    let part = payload
                        [payload.len() * k / pieces..payload.len() * (k + 1) / pieces]
                        .to_vec();
                    let opcode = match (k, is_text) {
                        (0, true) => frame::TEXT,
                        (0, false) => frame::BINARY,
                        _ => frame::CONT,
                    };
                    actions.push(Action::Send(frame(
                        Frame::new(opcode, part).fin(k + 1 == pieces),
                    )));
                    if k == 0
                        && let Some(c) = inside
                    {
                        actions.push(Action::Send(frame(control_frame(c, seed + i))));
                    }
                }
            }
            Step::Control(c) => actions.push(Action::Send(frame(control_frame(c, seed + i)))),
            Step::Pause(ms) => {
                let ms = u64::from(ms).min(pause_left);
                pause_left -= ms;
                actions.push(Action::PauseReading(Duration::from_millis(ms)));
            }
            Step::Sleep(ms) => actions.push(Action::Sleep(Duration::from_millis(u64::from(ms)))),
        }
    }
    let finish = match spec.end {
        End::Close(code, reason) => Finish::Close(close_payload(code, reason)),
        End::Vanish => Finish::Vanish,
        End::Await if is_client && matches!(other.end, End::Await) => {
            Finish::Close(close_payload(Some(1000), 0))
        }
        End::Await => Finish::Await,
        End::Violate(bad) => {
            let (valid, bytes, reply) = violation(bad, is_client);
            actions.extend(valid.map(|f| Action::Send(frame(f))));
            actions.push(Action::Violate { bytes, reply });
            Finish::Await
        }
    };
    Script { actions, finish }
}

fn control_frame(c: Control, seed: usize) -> Frame {
    match c {
        Control::Ping(len) => Frame::new(frame::PING, bytes(usize::from(len), seed)),
        Control::Pong(len) => Frame::new(frame::PONG, bytes(usize::from(len), seed)),
    }
}

/// A Close payload: `code` (none: empty) and a UTF-8 reason of at most `reason` bytes.
fn close_payload(code: Option<u16>, reason: u8) -> Vec<u8> {
    let Some(code) = code else { return Vec::new() };
    let mut why = String::new();
    for c in "bye, é€ ".chars().cycle() {
        if why.len() + c.len_utf8() > usize::from(reason) {
            break;
        }
        why.push(c);
    }
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(why.as_bytes());
    out
}

/// The valid frame sent first (if any), the offending bytes, and whether the peer can
/// still answer a Close afterwards.
fn violation(bad: Bad, is_client: bool) -> (Option<Frame>, Vec<u8>, bool) {
    let mask = |f: Frame| if is_client { f.masked() } else { f };
    let mut first = None;
    let mut reply = true;
    let wire = match bad {
        Bad::Rsv => mask(Frame::binary("x").rsv(0b100)).encode(),
        Bad::LongPing => mask(Frame::ping(vec![7u8; 126])).encode(),
        Bad::FragmentedPing => mask(Frame::ping("p").fin(false)).encode(),
        Bad::OrphanContinuation => mask(Frame::cont("x")).encode(),
        Bad::DataInsideFragment => {
            first = Some(Frame::text("a").fin(false));
            mask(Frame::binary("b")).encode()
        }
        Bad::CloseCode(code) => {
            reply = false;
            mask(Frame::close(code, "")).encode()
        }
        Bad::OneByteClose => {
            reply = false;
            mask(Frame::new(frame::CLOSE, vec![3u8])).encode()
        }
        Bad::WrongMask if is_client => Frame::text("x").encode(),
        Bad::WrongMask => Frame::text("x").masked().encode(),
        Bad::InvalidUtf8 => mask(Frame::text(vec![0xffu8, 0xfe])).encode(),
        Bad::TooBig => {
            // Only the header: the stream cannot be parsed after it, so nothing follows.
            reply = false;
            let key = is_client.then_some(frame::MASK);
            frame::header(true, 0, frame::BINARY, key, MAX_FRAME + 1)
        }
    };
    (first, wire, reply)
}

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
