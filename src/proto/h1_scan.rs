//! HTTP/1.1 request framing followed on the bytes as they stream past, the way hyper's
//! server frames them (heads, `Content-Length` bodies by count, chunked bodies), so that
//! each request head is inspected strictly for the smuggling shapes hyper's parser
//! normalises away without a trace (RFC 9112 §6.1, §6.3, §2.2). Nothing is buffered: the
//! state between two pieces is a few counters, so a head may arrive a byte at a time.
//!
//! Hand-written because `httparse` (hyper's own parser) wants a head whole in one slice,
//! and the shapes it is here for are the ones `httparse` accepts. What hyper refuses
//! itself is not checked again; where the scan meets such bytes it stops following the
//! connection (hyper's own 400 ends it).

/// Why a request head is refused: a 400, and the connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// `Content-Length` beside `Transfer-Encoding` (RFC 9112 §6.3 lets a server refuse; a
    /// peer that honours the length reads another request than hyper).
    LengthWithCoding = 1,
    /// A line of the head ended by LF alone (RFC 9112 §2.2).
    BareLf = 2,
    /// More than one `Content-Length` (two lines, or a list), even with equal values.
    RepeatedLength = 3,
    /// A `Transfer-Encoding` other than one `chunked`: any other coding would reach the
    /// backend undeclared once hyper removed the chunking.
    Coding = 4,
    /// Bytes hyper's parser refuses itself (bare CR, a field line without a colon, obs-fold,
    /// a `Content-Length` that is not a number): the framing cannot be followed past them.
    Malformed = 5,
}

impl Refusal {
    /// The refusal stored as a byte (see [`Refusal::from_code`]).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The refusal [`Refusal::code`] gave, if `code` is one.
    pub fn from_code(code: u8) -> Option<Refusal> {
        use Refusal::*;
        [LengthWithCoding, BareLf, RepeatedLength, Coding, Malformed]
            .into_iter()
            .find(|r| r.code() == code)
    }

    /// What the client is told, and the log says.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::LengthWithCoding => "Content-Length together with Transfer-Encoding",
            Refusal::BareLf => "line ended by a bare LF",
            Refusal::RepeatedLength => "more than one Content-Length",
            Refusal::Coding => "Transfer-Encoding other than chunked",
            Refusal::Malformed => "malformed request head",
        }
    }
}

/// Where the scan stopped following the connection, at a head of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// An upgrade request (`Upgrade`, or CONNECT): what follows may be another protocol.
    Upgrade,
    /// A refused head.
    Refused(Refusal),
}

/// A chunked body broken at `at` (an offset in the bytes last fed): hyper could read it
/// otherwise than a backend, so the connection ends there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct ChunkError {
    /// Offset of the first byte that broke it, in the bytes of that `feed`.
    pub at: usize,
}

/// The framing of one connection's requests, followed byte by byte.
#[derive(Debug, Default)]
pub struct Scanner {
    phase: Phase,
    /// Heads seen whole; the head being read has this index.
    heads: u64,
    stop: Option<(u64, Stop)>,
}

#[derive(Debug)]
enum Phase {
    Head(Head),
    Fixed(u64),
    Chunked(Chunk),
    /// Stopped (see `Scanner::stop`), or broken: nothing more is read.
    Off,
}

impl Default for Phase {
    fn default() -> Phase {
        Phase::Head(Head::default())
    }
}

/// Field names the scan tells apart, lowercase, each one bit of `Head::names`.
const NAMES: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"upgrade"];
const CONNECT: &[u8] = b"CONNECT";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the request line: empty lines are skipped, as `httparse` does.
    #[default]
    Lead,
    RequestLine,
    LineStart,
    Name,
    Value,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Field {
    #[default]
    Other,
    Length,
    Coding,
    Upgrade,
}

#[derive(Debug, Default)]
struct Head {
    at: At,
    /// The byte before was a CR: only LF may follow.
    cr: bool,
    /// How far the method matched `CONNECT` (`u8::MAX` once it did not, or ended).
    method: u8,
    connect: bool,
    /// Candidate names (bits of `NAMES`) and the name's length so far.
    names: u8,
    name_len: usize,
    field: Field,
    /// Within a value: OWS before it passed, its token (digits, or `chunked`) ended.
    began: bool,
    ended: bool,
    /// Bytes of the value matched (digits, or of `chunked`).
    matched: u8,
    lengths: u8,
    codings: u8,
    upgrade: bool,
    length: u64,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    Start,
    Size(u64),
    Space(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    LineStart,
    /// In a trailer line, after its name's colon or not.
    Trailer {
        colon: bool,
    },
    TrailerLf,
    EndLf,
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A control character (HTAB aside): never legitimately in a chunk line or trailer.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

impl Scanner {
    /// A scanner at the start of a connection.
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Where the scan stopped, if it did: the index of that head (0 for the first request
    /// on the connection) and why.
    pub fn stop(&self) -> Option<(u64, Stop)> {
        self.stop
    }

    /// Request heads seen whole so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Follows `bytes`, the next ones read from the client. After an error every further
    /// `feed` fails at 0.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            match &mut self.phase {
                Phase::Off => return self.broken_at(i),
                Phase::Fixed(left) => {
                    let take = (bytes.len() - i).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    i += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.phase = Phase::default();
                    }
                }
                Phase::Chunked(Chunk::Data(left)) => {
                    let take = (bytes.len() - i).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    i += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.phase = Phase::Chunked(Chunk::DataCr);
                    }
                }
                Phase::Chunked(c) => {
                    match chunk_byte(*c, bytes[i]) {
                        Some(Some(next)) => *c = next,
                        Some(None) => self.phase = Phase::default(),
                        None => {
                            self.phase = Phase::Off;
                            return Err(ChunkError { at: i });
                        }
                    }
                    i += 1;
                }
                Phase::Head(h) => {
                    let b = bytes[i];
                    i += 1;
                    match h.byte(b) {
                        Ok(false) => {}
                        Ok(true) => self.head_done(),
                        Err(r) => {
                            self.stop = Some((self.heads, Stop::Refused(r)));
                            self.phase = Phase::Off;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn broken_at(&self, at: usize) -> Result<(), ChunkError> {
        // Stopped on purpose: the rest passes unread. Broken: it stays broken.
        match self.stop {
            Some(_) => Ok(()),
            None => Err(ChunkError { at }),
        }
    }

    fn head_done(&mut self) {
        let Phase::Head(h) = &self.phase else { return };
        self.phase = if h.upgrade || h.connect {
            self.stop = Some((self.heads, Stop::Upgrade));
            Phase::Off
        } else if h.codings > 0 {
            Phase::Chunked(Chunk::Start)
        } else if h.length > 0 {
            Phase::Fixed(h.length)
        } else {
            Phase::default()
        };
        self.heads += 1;
    }
}

impl Head {
    /// Takes one byte of the head: `Ok(true)` when it ended it.
    fn byte(&mut self, b: u8) -> Result<bool, Refusal> {
        if self.cr {
            self.cr = false;
            return match b {
                b'\n' => self.line_end(),
                _ => Err(Refusal::Malformed),
            };
        }
        match b {
            b'\r' => {
                self.cr = true;
                Ok(false)
            }
            b'\n' => Err(Refusal::BareLf),
            _ => self.inside(b).map(|()| false),
        }
    }

    fn line_end(&mut self) -> Result<bool, Refusal> {
        match self.at {
            At::Lead => {}
            At::RequestLine => self.at = At::LineStart,
            At::LineStart => return Ok(true),
            At::Name => return Err(Refusal::Malformed),
            At::Value => {
                self.value_end()?;
                self.at = At::LineStart;
            }
        }
        Ok(false)
    }

    fn inside(&mut self, b: u8) -> Result<(), Refusal> {
        match self.at {
            At::Lead | At::RequestLine => {
                self.at = At::RequestLine;
                self.method_byte(b);
                Ok(())
            }
            At::LineStart if is_ows(b) => Err(Refusal::Malformed),
            At::LineStart => {
                self.at = At::Name;
                self.names = (1 << NAMES.len()) - 1;
                self.name_len = 0;
                self.name_byte(b)
            }
            At::Name => self.name_byte(b),
            At::Value => self.value_byte(b),
        }
    }

    fn method_byte(&mut self, b: u8) {
        let at = usize::from(self.method);
        if b == b' ' && at == CONNECT.len() {
            self.connect = true;
        }
        self.method = match CONNECT.get(at) {
            Some(&c) if c == b => self.method + 1,
            _ => u8::MAX,
        };
    }

    fn name_byte(&mut self, b: u8) -> Result<(), Refusal> {
        if b != b':' {
            let lower = b.to_ascii_lowercase();
            for (bit, name) in NAMES.iter().enumerate() {
                if name.get(self.name_len) != Some(&lower) {
                    self.names &= !(1 << bit);
                }
            }
            self.name_len = self.name_len.saturating_add(1);
            return Ok(());
        }
        let bit = NAMES
            .iter()
            .enumerate()
            .position(|(bit, n)| self.names & (1 << bit) != 0 && n.len() == self.name_len);
        self.field = match bit {
            Some(0) => Field::Length,
            Some(1) => Field::Coding,
            Some(2) => Field::Upgrade,
            _ => Field::Other,
        };
        (self.began, self.ended, self.matched) = (false, false, 0);
        self.at = At::Value;
        match self.field {
            Field::Length => self.lengths = self.lengths.saturating_add(1),
            Field::Coding => self.codings = self.codings.saturating_add(1),
            Field::Upgrade => self.upgrade = true,
            Field::Other => {}
        }
        if self.lengths > 0 && self.codings > 0 {
            Err(Refusal::LengthWithCoding)
        } else if self.lengths > 1 {
            Err(Refusal::RepeatedLength)
        } else if self.codings > 1 {
            Err(Refusal::Coding)
        } else {
            Ok(())
        }
    }

    fn value_byte(&mut self, b: u8) -> Result<(), Refusal> {
        if is_ows(b) {
            self.ended |= self.began;
            return Ok(());
        }
        match self.field {
            Field::Other | Field::Upgrade => Ok(()),
            _ if self.ended && b == b',' && self.field == Field::Length => {
                Err(Refusal::RepeatedLength)
            }
            _ if self.ended => Err(self.wrong()),
            Field::Length => {
                self.began = true;
                if b == b',' {
                    return Err(Refusal::RepeatedLength);
                }
                let digit = (b as char).to_digit(10).ok_or(Refusal::Malformed)?;
                self.length = self
                    .length
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(u64::from(digit)))
                    .ok_or(Refusal::Malformed)?;
                self.matched = 1;
                Ok(())
            }
            Field::Coding => {
                self.began = true;
                match b"chunked".get(usize::from(self.matched)) {
                    Some(&c) if c == b.to_ascii_lowercase() => {
                        self.matched += 1;
                        Ok(())
                    }
                    _ => Err(Refusal::Coding),
                }
            }
        }
    }

    fn wrong(&self) -> Refusal {
        match self.field {
            Field::Coding => Refusal::Coding,
            _ => Refusal::Malformed,
        }
    }

    fn value_end(&mut self) -> Result<(), Refusal> {
        match self.field {
            Field::Length if self.matched == 0 => Err(Refusal::Malformed),
            Field::Coding if usize::from(self.matched) != b"chunked".len() => Err(Refusal::Coding),
            _ => Ok(()),
        }
    }
}

/// A chunked body followed as it streams past, a response's on its way to the client:
/// where its data is and where it ends, or that its syntax broke (then the exchange
/// fails, as a backend's framing cannot be trusted past that byte).
#[derive(Debug, Clone, Copy)]
pub struct ChunkedBody(Chunk);

impl Default for ChunkedBody {
    fn default() -> ChunkedBody {
        ChunkedBody(Chunk::Start)
    }
}

impl ChunkedBody {
    /// Follows the body through `bytes` up to its next run of chunk data, or its end:
    /// `(consumed, data, ended)`. When `data > 0` the first `data` bytes are chunk data
    /// (and `consumed == data`); else `consumed` bytes of chunk lines or trailers were
    /// followed, the last of the body when `ended`.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(usize, usize, bool), ChunkError> {
        if let Chunk::Data(left) = &mut self.0 {
            let take = bytes
                .len()
                .min(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= take as u64;
            if *left == 0 {
                self.0 = Chunk::DataCr;
            }
            return Ok((take, take, false));
        }
        // Bounded by `bytes`.
        for (i, &b) in bytes.iter().enumerate() {
            match chunk_byte(self.0, b) {
                Some(Some(next)) => {
                    self.0 = next;
                    if matches!(next, Chunk::Data(_)) {
                        return Ok((i + 1, 0, false));
                    }
                }
                Some(None) => return Ok((i + 1, 0, true)),
                None => return Err(ChunkError { at: i }),
            }
        }
        Ok((bytes.len(), 0, false))
    }
}

/// One byte of a chunked body outside a chunk's data: the next state, `Some(None)` when
/// the body ended with it, `None` when it broke the syntax (RFC 9112 §7.1). Stricter
/// than hyper where hyper is lenient (controls in extensions, trailer lines without a
/// colon or with a bare LF), never laxer.
fn chunk_byte(state: Chunk, b: u8) -> Option<Option<Chunk>> {
    use Chunk::*;
    let next = match (state, b) {
        (Start, _) => Size(hex(b)?),
        (Size(n), _) if hex(b).is_some() => Size(n.checked_mul(16)?.checked_add(hex(b)?)?),
        (Size(n) | Space(n), _) if is_ows(b) => Space(n),
        (Size(n) | Space(n), b';') => Extension(n),
        (Size(n) | Space(n) | Extension(n), b'\r') => SizeLf(n),
        (Extension(n), _) if !is_ctl(b) => Extension(n),
        (SizeLf(0), b'\n') => LineStart,
        (SizeLf(n), b'\n') => Data(n),
        (DataCr, b'\r') => DataLf,
        (DataLf, b'\n') => Start,
        (LineStart, b'\r') => EndLf,
        (LineStart, _) if !is_ctl(b) && !is_ows(b) && b != b':' => Trailer { colon: false },
        (Trailer { colon: true }, b'\r') => TrailerLf,
        (Trailer { colon: false }, b':') => Trailer { colon: true },
        (Trailer { colon: false }, _) if is_ows(b) => return None,
        (Trailer { colon }, _) if !is_ctl(b) => Trailer { colon },
        (TrailerLf, b'\n') => LineStart,
        (EndLf, b'\n') => return Some(None),
        _ => return None,
    };
    Some(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` whole and a byte at a time; both must agree.
    fn scan(bytes: &[u8]) -> (Option<(u64, Stop)>, Result<(), ChunkError>, u64) {
        let mut whole = Scanner::new();
        let res = whole.feed(bytes);
        let mut dribbled = Scanner::new();
        let mut res1 = Ok(());
        for (i, b) in bytes.iter().enumerate() {
            if let Err(e) = dribbled.feed(std::slice::from_ref(b)) {
                res1 = Err(ChunkError { at: i + e.at });
                break;
            }
        }
        assert_eq!(whole.stop, dribbled.stop);
        assert_eq!(res, res1);
        (whole.stop, res, whole.heads)
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_do_whole_or_dribbled() {
        /// The data and the end offset of `body` stepped through in pieces of `size`.
        fn stepped(body: &[u8], size: usize) -> Result<(Vec<u8>, usize), ChunkError> {
            let mut c = ChunkedBody::default();
            let (mut data, mut at) = (Vec::new(), 0);
            // Bounded: each step consumes at least a byte of a non-empty piece.
            while at < body.len() {
                let piece = &body[at..(at + size).min(body.len())];
                let (n, d, ended) = c.step(piece)?;
                assert!(n > 0 && d <= n);
                data.extend_from_slice(&piece[..d]);
                at += n;
                if ended {
                    return Ok((data, at));
                }
            }
            Ok((data, usize::MAX))
        }
        let body = b"5;x=y\r\nhello\r\n1\r\n \r\n0\r\nT: v\r\n\r\nNEXT";
        for size in [1, 2, 3, 7, body.len()] {
            assert_eq!(
                stepped(body, size),
                Ok((b"hello ".to_vec(), body.len() - 4)),
                "{size}"
            );
        }
        assert!(stepped(b"5\r\nhelloX", 100).is_err());
        assert!(stepped(b"zz\r\n", 100).is_err());
        assert_eq!(stepped(b"5\r\nhel", 100), Ok((b"hel".to_vec(), usize::MAX)));
    }

    fn refused(bytes: &str) -> Option<Refusal> {
        match scan(bytes.as_bytes()).0 {
            Some((_, Stop::Refused(r))) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn the_shapes_hyper_lets_through_are_refused() {
        let cases = [
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::LengthWithCoding,
            ),
            (
                "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                Refusal::LengthWithCoding,
            ),
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", Refusal::BareLf),
            ("GET / HTTP/1.1\r\nHost: a\n\r\n", Refusal::BareLf),
            ("GET / HTTP/1.1\r\nHost: a\r\n\n", Refusal::BareLf),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                Refusal::RepeatedLength,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
                Refusal::RepeatedLength,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3 ,3\r\n\r\n",
                Refusal::RepeatedLength,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Refusal::Coding,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::Coding,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Refusal::Coding,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
                Refusal::Coding,
            ),
            ("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", Refusal::Malformed),
        ];
        for (head, want) in cases {
            assert_eq!(refused(head), Some(want), "{head:?}");
        }
    }

    #[test]
    fn ordinary_requests_pass_and_are_counted() {
        let two = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
                   GET /b HTTP/1.1\r\nHost: a\r\n\r\n\r\n\
                   POST /c HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\n\r\n\
                   5;a=\"b c\"\r\nhel\nl\r\n0\r\nX-T: 1\r\nY:\r\n\r\n\
                   GET /d HTTP/1.1\r\ncontent-length:\t0\r\n\r\n";
        assert_eq!(scan(two.as_bytes()), (None, Ok(()), 4));
    }

    #[test]
    fn a_chunked_body_that_looks_like_a_head_is_body() {
        let fake =
            "POST /smuggled HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        let req = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{fake}\r\n0\r\n\r\n",
            fake.len()
        );
        assert_eq!(scan(req.as_bytes()), (None, Ok(()), 1));
    }

    #[test]
    fn an_upgrade_or_connect_stops_the_scan() {
        let up = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x85GET / HTTP/1.1\n";
        assert_eq!(scan(up).0, Some((0, Stop::Upgrade)));
        let connect = "GET / HTTP/1.1\r\n\r\nCONNECT a:1 HTTP/1.1\r\n\r\n\n\n";
        assert_eq!(scan(connect.as_bytes()).0, Some((1, Stop::Upgrade)));
        let not = "CONNECTX / HTTP/1.1\r\n\r\n";
        assert_eq!(scan(not.as_bytes()), (None, Ok(()), 1));
    }

    #[test]
    fn broken_chunk_syntax_fails_where_it_breaks() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "5\nhello\r\n0\r\n\r\n",
            "5;x\n\r\nhello",
            "5\r\nhelloX",
            "g\r\n",
            "0\r\nX: a\nb\r\n\r\n",
            "0\r\n a: b\r\n\r\n",
            "0\r\nab\r\n\r\n",
            "0\r\n\rX",
        ] {
            let req = format!("{head}{body}");
            let (_, res, _) = scan(req.as_bytes());
            assert!(res.is_err(), "{body:?}");
        }
        let overflow = format!("{head}10000000000000000\r\n");
        assert!(scan(overflow.as_bytes()).1.is_err());
    }

    #[test]
    fn codes_round_trip() {
        for r in [
            Refusal::LengthWithCoding,
            Refusal::BareLf,
            Refusal::RepeatedLength,
            Refusal::Coding,
            Refusal::Malformed,
        ] {
            assert_eq!(Refusal::from_code(r.code()), Some(r));
        }
        assert_eq!(Refusal::from_code(0), None);
    }
}
