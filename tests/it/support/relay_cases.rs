//! Generated relay cases for the property tests (`relay_props`): each peer's script as
//! plain data ([`Case`], so proptest shrinks it), the strategies that generate it, and
//! [`plan`], which turns a [`Spec`] into the frames and actions a [`Script`] runs.
//!
//! Messages are fragmented at arbitrary byte offsets (inside UTF-8 characters too), with
//! pings or pongs between fragments; reading pauses are capped per peer
//! ([`PAUSE_BUDGET_MS`]) so a paused peer still answers the close handshake in time.

use std::time::Duration;

use proptest::prelude::*;

use super::frame::{self, Frame};
use super::scripted::{Action, Finish, Script};

/// Most reading pause per peer and case: well under the close timeout, so a paused peer
/// still answers the close handshake in time.
pub const PAUSE_BUDGET_MS: u64 = 300;
/// `max_frame_bytes` of the route: above every frame generated, below [`Bad::TooBig`].
pub const MAX_FRAME: u64 = 1 << 20;

/// A control frame a peer sends of its own (payload length ≤ 125).
#[derive(Debug, Clone, Copy)]
pub enum Control {
    Ping(u8),
    Pong(u8),
}

/// One step of a peer's script.
#[derive(Debug, Clone)]
pub enum Step {
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
pub enum Bad {
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
    pub fn code(self) -> u16 {
        match self {
            Bad::InvalidUtf8 => 1007,
            Bad::TooBig => 1009,
            _ => 1002,
        }
    }
}

/// How a peer's script ends.
#[derive(Debug, Clone)]
pub enum End {
    /// A Close with this code (none: empty payload) and a reason of about this many bytes.
    Close(Option<u16>, u8),
    Vanish,
    Await,
    Violate(Bad),
}

/// One peer's generated script.
#[derive(Debug, Clone)]
pub struct Spec {
    pub steps: Vec<Step>,
    pub end: End,
}

/// One generated case: the client's script and the backend's.
#[derive(Debug, Clone)]
pub struct Case {
    pub client: Spec,
    pub backend: Spec,
}

pub fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (0u8..=125).prop_map(Control::Ping),
        (0u8..=125).prop_map(Control::Pong)
    ]
}

pub fn step() -> impl Strategy<Value = Step> {
    let len = prop_oneof![8 => 0usize..=300, 2 => 1_000usize..=70_000, 1 => 200_000usize..=700_000];
    prop_oneof![
        8 => (any::<bool>(), len, 1u8..=4, proptest::option::weighted(0.3, control()))
            .prop_map(|(text, len, pieces, inside)| Step::Message { text, len, pieces, inside }),
        2 => control().prop_map(Step::Control),
        1 => (0u8..=150).prop_map(Step::Pause),
        2 => (0u8..=5).prop_map(Step::Sleep),
    ]
}

pub fn bad() -> impl Strategy<Value = Bad> {
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

pub fn end() -> impl Strategy<Value = End> {
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

pub fn spec() -> impl Strategy<Value = Spec> {
    (prop::collection::vec(step(), 0..10), end()).prop_map(|(steps, end)| Spec { steps, end })
}

pub fn case() -> impl Strategy<Value = Case> {
    (spec(), spec()).prop_map(|(client, backend)| Case { client, backend })
}

/// About `len` bytes of valid UTF-8 with multi-byte characters, different per `seed`.
pub fn text(len: usize, seed: usize) -> Vec<u8> {
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
pub fn bytes(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(7)) as u8)
        .collect()
}

/// The frames and actions a peer's spec stands for (`is_client`: masked, with keys that
/// vary). A case whose peers both await the other's Close has its client close instead.
pub fn plan(spec: &Spec, is_client: bool, other: &Spec) -> Script {
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

pub fn control_frame(c: Control, seed: usize) -> Frame {
    match c {
        Control::Ping(len) => Frame::new(frame::PING, bytes(usize::from(len), seed)),
        Control::Pong(len) => Frame::new(frame::PONG, bytes(usize::from(len), seed)),
    }
}

/// A Close payload: `code` (none: empty) and a UTF-8 reason of at most `reason` bytes.
pub fn close_payload(code: Option<u16>, reason: u8) -> Vec<u8> {
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
pub fn violation(bad: Bad, is_client: bool) -> (Option<Frame>, Vec<u8>, bool) {
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
