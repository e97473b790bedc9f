//! wsgate: a WebSocket reverse proxy that terminates TLS, routes upgrades by host and path,
//! relays frames (not bytes) between client and backend, and reports every close.
//!
//! # Layout
//! One folder per layer; a module imports only from layers below its own, `backend` and
//! `relay` never from each other, and no modules import each other in a circle
//! (`tests/layers.rs` reads the sources and fails otherwise). From the bottom up, in the
//! order a connection meets them:
//!
//! 1. `proto`: RFC 6455 and HTTP on bytes, no I/O.
//!    - `proto::frame`: the frame codec, masking and re-masking, per-hop checks.
//!    - `proto::close`: close codes and Close payload rules.
//!    - `proto::utf8`: incremental UTF-8 of text across fragments.
//!    - `proto::handshake`: the `Sec-WebSocket-Accept` key.
//!    - `proto::headers`: header tokens, hop-by-hop and forwarding rules.
//!    - `proto::path`: path normalisation (what is routed is what is forwarded).
//!    - `proto::h1_scan`: HTTP/1.1 request framing followed on streaming bytes, each head
//!      inspected for the smuggling shapes hyper normalises away.
//!    - `proto::proxy_header`: the PROXY protocol header (v1, v2): its bounds, its address;
//!      `proto::forwarded`: a trusted proxy's chain and the client address it gives.
//! 2. `config`: the YAML file.
//!    - `config` (mod): the schema; `config::parse`: deserialisers with file:line:column;
//!      `config::validate`: the one cross-field check; `config::units`: durations, sizes;
//!      `config::cidr`: networks of trusted peers.
//!    - `config::tuning`: each per-connection key declared once (struct, default, override, merge).
//!    - `config::routes`, `config::pool`: routes and their backend pools;
//!      `config::backend_url`: `ws://`/`wss://` URLs; `config::tls`: PEM files checked at
//!      load, a listener's `client_auth`; `config::forward_auth`: a route's `forward_auth`.
//!    - `config::http2`: a listener's ALPN offer and the limits of HTTP/2 connections.
//!    - `config::dns`: where backend host names are resolved, and how often again.
//!    - `config::admission`: a route's caps and rate of new WebSockets.
//!    - `config::jwt`: a route's `jwt:` section (token places, keys, claims, expiry).
//!    - `config::admin_token`: the admin API's bearer token, from a file or the environment.
//! 3. `shared`: what every stage shares.
//!    - `shared::state`: `ProxyState` (routes, settings, metrics, reports, counts, tokens).
//!    - `shared::routes`: the route table; `shared::pool`: a pool's live members.
//!    - `shared::occupancy`: seats counted per group; `shared::retire`: 1012 spread over a window.
//!    - `shared::metrics`: Prometheus handles; `shared::report`: the close report.
//!    - `shared::tls`: rustls configs built from files; `shared::stream`: one stream type;
//!      `shared::client`: who is on the client hop (and the streams of an HTTP/2
//!      connection); `shared::random`: OS randomness.
//!    - `shared::idle_conns`: a backend's idle keep-alive HTTP connections;
//!      `shared::deadline`: a deadline moved per request at the cost of a field write.
//!    - `shared::admission`: who the door let a WebSocket in as, and until when.
//!    - `shared::tally`: seats counted per key (client network, identity);
//!      `shared::bucket`: a token bucket; `shared::gate`: a route's admission state.
//!    - `shared::forward_auth`: a route's auth service (its connections) and answer cache.
//!    - `shared::jwks`: a route's JWT keys (a file, a secret, a JWKS's last document),
//!      each with the one algorithm it verifies; `shared::jws`: their signatures checked on `ring`.
//!    - `shared::registry`: live connections for the admin API, each with its counters and
//!      a mailbox to its own task.
//! 4. `backend`: the backend hop up to its 101.
//!    - `backend::dial`: TCP/TLS connect (source addresses); `backend::balance`: the order of candidates.
//!    - `backend::client`: the HTTP/1.1 upgrade client (`client::body`: refusal bodies).
//!    - `backend::open`: pick + retry; `backend::error`: one `BackendError`.
//!    - `backend::health`: health checks on that same client; `backend::echo`: built-in backend.
//!    - `backend::jwks`: fetching a route's JWKS (at start, in the background, on an unknown `kid`).
//!    - `backend::discovery`: backends given by host name, one member per DNS record, kept current.
//!    - `backend::http`: plain HTTP to the pool (pick + retry); `http::raw`: bodyless
//!      requests over bare pooled connections, without hyper (`raw::request`: the request
//!      head; `raw::head`: the response head and its framing; `raw::body`: the body read,
//!      its connection given back); `http::pool`: new and pooled connections;
//!      `http::body`: bodies streamed through, idle timeouts.
//!
//!    `relay`, beside it: the tunnel after 101.
//!    - `relay` (mod): one task drives both hops; `relay::hop`: one side's stream and queue.
//!    - `relay::message`: fragmentation and size rules; `relay::violation`: what ends a
//!      connection, with its close code and outcome; `relay::rate`: the message rate.
//!    - `relay::keepalive`: wsgate's pings; `relay::deadlines`: the one timer, shutdown, retirement.
//!    - `relay::mailbox`: admin commands (close, pushed messages) carried out by the task;
//!      `relay::signal`: the wakers that tell the task which hop (or watch) woke it.
//!    - `relay::closing`: close rules and the report; `relay::abandoned`: a client gone
//!      before its upgrade completed.
//! 5. `ingress`: the client side.
//!    - `ingress::listener`: sockets per worker and the accept loop;
//!      `ingress::proxy_protocol`: the PROXY header read before anything else;
//!      `ingress::conn`: TLS and the HTTP/1.1 connection; `ingress::h1_fast`: a first
//!      request that is a WebSocket upgrade, served without hyper (`h1_fast::read`: each
//!      head read and judged; `h1_fast::write`: the 101, bounded writes, `date`);
//!      `ingress::h1_plain`: bodyless plain requests (`GET`, `HEAD`), without hyper
//!      (`h1_plain::serve_one`: one request answered; `h1_plain::host_cache`: the
//!      connection's Host kept; `h1_plain::respond`: the client's heads written);
//!      `ingress::h1_guard`: the HTTP/1.1 client stream beneath hyper (request heads
//!      inspected, the write-stall deadline); `ingress::http2`: an HTTP/2 connection
//!      (ALPN `h2`);
//!      `ingress::request`: the service entry (route, then upgrade or forward);
//!      `ingress::upgrade`: the client's upgrade, the backend first, then the 101 (or 200);
//!      `ingress::connect`: an HTTP/2 extended CONNECT (RFC 8441) checked like an upgrade;
//!      `ingress::hello`: what a client asks for, and every refusal with its status;
//!      `ingress::forward`: plain requests forwarded, the access log;
//!      `ingress::door`: a route's checks (authentication, admission) before any backend;
//!      `door::admission`: caps per client and identity, the rate, `max_lifetime`;
//!      `door::client_cert`: the client certificate's header and `client_cert: required`;
//!      `door::forward_auth`: the auth service's subrequest and its answer;
//!      `door::jwt`: the JWT check.
//! 6. `control`: running it.
//!    - `control` (mod): [`run`], [`run_here`], [`Running`]; `control::reload`: reload diffing;
//!    - `control::admin`: the admin listener; `control::api`: the admin API under `/api/`
//!      (`api::connections`, `api::drain`, `api::config_view`, `api::events`, its OpenAPI
//!      document); `control::shutdown`: signals;
//!      `control::watch`: file watch; `control::workers`: worker threads.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod backend;
pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod ingress;
pub(crate) mod proto;
pub(crate) mod relay;
pub(crate) mod shared;

// The public API: what `main.rs` and the tests use; everything else is internal.
pub use config::{Config, ConfigError, LogConfig, LogFormat};
pub use control::shutdown::{Request, Signals};
pub use control::watch::{FileWatch, files as watched_files};
pub use control::{Running, StartError, run, run_here};
pub use shared::metrics::Metrics;
pub use shared::report::{CloseReport, ClosedBy, Outcome};

/// Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): thin wrappers that run one
/// internal layer on arbitrary bytes and return what it decided, so a target can check
/// invariants. Not part of the API; nothing else calls them.
#[doc(hidden)]
pub mod fuzzing {
    use std::task::{Context, Poll, Waker};

    use bytes::BytesMut;
    use hyper::header::{HeaderMap, HeaderName, HeaderValue};
    use hyper::{Method, Request, Version};
    use tokio::io::AsyncWriteExt;

    use crate::backend::client::{Answer, handshake};
    use crate::config::Tuning;
    use crate::proto::frame::FrameDecoder;
    use crate::proto::headers::forwardable;
    use crate::proto::room::Alternating;
    use crate::relay::message::{Limits, Message};
    use crate::relay::violation::Violation;
    use crate::shared::stream::Stream;

    /// What the HTTP/1.1 request scan decided on some bytes (see [`h1_scan`]).
    #[derive(Debug, PartialEq, Eq)]
    pub struct H1Scan {
        /// The head it stopped at, and why.
        pub stop: Option<(u64, String)>,
        /// Where a chunked body broke (offset in all the bytes).
        pub broken_at: Option<usize>,
        /// Heads seen whole.
        pub heads: u64,
    }

    /// For the fuzz targets: the HTTP/1.1 request scan run on `bytes` fed in pieces of
    /// `step` bytes (at least 1), which must decide as fed whole.
    pub fn h1_scan(bytes: &[u8], step: usize) -> H1Scan {
        let mut scan = crate::proto::h1_scan::Scanner::new();
        let mut broken_at = None;
        for (n, piece) in bytes.chunks(step.max(1)).enumerate() {
            if let Err(e) = scan.feed(piece) {
                broken_at = Some(n * step.max(1) + e.at);
                break;
            }
        }
        H1Scan {
            stop: scan.stop().map(|(at, why)| (at, format!("{why:?}"))),
            broken_at,
            heads: scan.heads(),
        }
    }

    /// What reading a PROXY protocol header made of some bytes (see [`proxy_header`]).
    #[derive(Debug, PartialEq, Eq)]
    pub struct ProxyHeader {
        /// The address it carries (`None`: `LOCAL`/`UNKNOWN`), or why it was refused;
        /// `Err("truncated")` when the bytes ended first.
        pub carried: Result<Option<std::net::SocketAddr>, &'static str>,
        /// How many bytes were taken as the header.
        pub consumed: usize,
    }

    /// For the fuzz targets: reads a PROXY header from the start of `bytes` the way the
    /// listener does, with each peek seeing at most `step` new bytes (at least 1): a v1
    /// line piece by piece until its end is known, a v2 fixed part and then the length it
    /// gives. The decision must not depend on `step`.
    pub fn proxy_header(bytes: &[u8], step: usize) -> ProxyHeader {
        use crate::proto::proxy_header::{
            Carried, V1_MAX_BYTES, V2_FIXED_BYTES, Version, parse_v1, parse_v2, v1_end,
            v2_payload_len,
        };
        let step = step.max(1);
        let done = |carried: Result<Carried, &'static str>, consumed| ProxyHeader {
            carried: carried.map(|c| match c {
                Carried::Client(addr) => Some(addr),
                Carried::Local => None,
            }),
            consumed,
        };
        let Some(&first) = bytes.first() else {
            return done(Err("truncated"), 0);
        };
        match Version::of(first) {
            Err(e) => done(Err(e.reason()), 0),
            Ok(Version::V1) => {
                let mut have = 0;
                // Each round takes at least one byte of a line of at most V1_MAX_BYTES.
                for _ in 0..V1_MAX_BYTES {
                    let seen = (have + step).min(bytes.len()).min(V1_MAX_BYTES);
                    if seen == have {
                        return done(Err("truncated"), have);
                    }
                    match v1_end(&bytes[..seen]) {
                        Err(e) => return done(Err(e.reason()), have),
                        Ok(Some(end)) => {
                            return done(parse_v1(&bytes[..end]).map_err(|e| e.reason()), end);
                        }
                        Ok(None) => have = seen,
                    }
                }
                done(Err("too_long"), have)
            }
            Ok(Version::V2) => {
                let Some(fixed) = bytes.get(..V2_FIXED_BYTES) else {
                    return done(Err("truncated"), bytes.len());
                };
                let mut head = [0u8; V2_FIXED_BYTES];
                head.copy_from_slice(fixed);
                let len = match v2_payload_len(&head) {
                    Ok(len) => len,
                    Err(e) => return done(Err(e.reason()), V2_FIXED_BYTES),
                };
                match bytes.get(..V2_FIXED_BYTES + len) {
                    Some(whole) => done(
                        parse_v2(whole).map_err(|e| e.reason()),
                        V2_FIXED_BYTES + len,
                    ),
                    None => done(Err("truncated"), bytes.len()),
                }
            }
        }
    }

    /// For the fuzz targets: the client address wsgate believes for a request from `peer`
    /// carrying these `X-Forwarded-For` and `Forwarded` lines, and whether it appends its
    /// hop to the peer's (`trusted` decides which addresses are trusted proxies).
    pub fn forwarded(
        xff: &[&[u8]],
        forwarded: &[&[u8]],
        peer: std::net::IpAddr,
        trusted: impl Fn(std::net::IpAddr) -> bool,
    ) -> (std::net::IpAddr, bool) {
        let mut headers = HeaderMap::new();
        for (name, lines) in [("x-forwarded-for", xff), ("forwarded", forwarded)] {
            for line in lines {
                if let Ok(value) = HeaderValue::from_bytes(line) {
                    headers.append(HeaderName::from_static(name), value);
                }
            }
        }
        let f = crate::proto::forwarded::Forwarding::read(&headers, peer, trusted);
        (f.client, f.prior.is_some())
    }

    /// The key wsgate masks frames for a backend with, in [`frames`] (any fixed key will do).
    const FORWARD_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// One frame that passed every check, as the relay would forward it.
    #[derive(Debug)]
    pub struct Forwarded {
        /// FIN bit.
        pub fin: bool,
        /// Opcode number.
        pub opcode: u8,
        /// The unmasked payload.
        pub payload: Vec<u8>,
        /// The bytes written to the other hop (masked when `expect_masked`).
        pub wire: Vec<u8>,
    }

    /// What the relay made of one hop's bytes.
    #[derive(Debug)]
    pub struct Frames {
        /// The frames forwarded before the input ended or broke a rule.
        pub frames: Vec<Forwarded>,
        /// The violation that ended the hop: its close code and reason.
        pub violation: Option<(u16, String)>,
        /// The input ended inside a frame.
        pub truncated: bool,
    }

    /// For the fuzz targets: decodes `bytes` as what one peer sends (a client when
    /// `expect_masked`) with the relay's per-frame and per-message checks, re-encoding each
    /// good frame for the other hop. Message limits are derived from `max_frame` (4 frames'
    /// worth, at most 8 fragments) so that the fuzzer reaches them with small inputs.
    pub fn frames(bytes: &[u8], expect_masked: bool, max_frame: u64) -> Frames {
        let tuning = Tuning {
            max_frame_bytes: max_frame,
            max_message_bytes: max_frame.saturating_mul(4),
            max_message_frames: 8,
            ..Tuning::default()
        };
        let mut decoder = FrameDecoder::new(BytesMut::new(), expect_masked, max_frame);
        let mut message = Message::default();
        let limits = Limits::of(&tuning);
        let mut io = bytes;
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Frames {
            frames: Vec::new(),
            violation: None,
            truncated: false,
        };
        let mut partial: Option<Forwarded> = None;
        let mut room = Alternating::new(true, crate::proto::frame::STREAM_MIN);
        // Each frame takes at least 2 bytes and each piece of one a byte, and every other
        // poll may wait for room, so this bound is never the one that ends it.
        for _ in 0..=4 * bytes.len() + 4 {
            // A slice never returns Pending: it has the bytes or is at its end; only the
            // room can be pending, and it grants the next time.
            let Poll::Ready(read) = decoder.poll_frame(&mut io, &mut room, &mut cx) else {
                continue;
            };
            let mut frame = match read {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    match Violation::from_frame_error(&e, expect_masked) {
                        Some(v) => out.violation = Some((v.code(), v.to_string())),
                        None => out.truncated = true,
                    }
                    break;
                }
            };
            if let Err(v) = message.check(&mut frame, limits) {
                out.violation = Some((v.code(), v.to_string()));
                break;
            }
            // A large frame comes in pieces: joined here, so each entry is one whole frame.
            let ends = frame.ends();
            let (fin, opcode, payload) = (frame.fin, frame.opcode as u8, frame.payload().to_vec());
            let wire = frame
                .into_wire(expect_masked.then_some(FORWARD_KEY))
                .to_vec();
            match partial.as_mut() {
                Some(p) => {
                    p.payload.extend_from_slice(&payload);
                    p.wire.extend_from_slice(&wire);
                }
                None => {
                    partial = Some(Forwarded {
                        fin,
                        opcode,
                        payload,
                        wire,
                    })
                }
            }
            if ends {
                out.frames.extend(partial.take());
            }
        }
        // The input ended inside a streamed frame: its pieces so far are not a frame.
        if partial.is_some() {
            out.truncated = true;
        }
        out
    }

    /// What the client-upgrade checks made of one request head.
    #[derive(Debug)]
    pub struct ClientRequest {
        /// The request as hyper would hand it to wsgate.
        pub request: Request<()>,
        /// `Ok(offered subprotocols)` when the upgrade is valid, else the refusal's reason.
        pub hello: Result<Vec<String>, &'static str>,
        /// The normalised path, or why it was refused.
        pub path: Result<String, crate::proto::path::PathError>,
        /// The headers that would be forwarded to the backend.
        pub forwarded: HeaderMap,
    }

    /// For the fuzz targets: parses an HTTP/1.1 request head with httparse into a
    /// `hyper::Request` (`None` when that fails, as hyper would refuse it), then runs the
    /// client-upgrade validation, path normalisation and header forwarding on it.
    pub fn client_request(bytes: &[u8]) -> Option<ClientRequest> {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut slots);
        if !matches!(parsed.parse(bytes), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let mut builder = Request::builder()
            .method(Method::from_bytes(parsed.method?.as_bytes()).ok()?)
            .uri(parsed.path?)
            .version(match parsed.version? {
                0 => Version::HTTP_10,
                _ => Version::HTTP_11,
            });
        let headers = builder.headers_mut()?;
        for h in parsed.headers.iter() {
            headers.append(
                HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                HeaderValue::from_bytes(h.value).ok()?,
            );
        }
        let request = builder.body(()).ok()?;
        let hello = crate::ingress::upgrade::validate(&request)
            .map(|h| h.protocols)
            .map_err(|e| e.reason());
        let path = crate::proto::path::normalize_path(request.uri().path());
        let forwarded = forwardable(request.headers());
        Some(ClientRequest {
            request,
            hello,
            path,
            forwarded,
        })
    }

    /// The upgrade request [`backend_answer`] sends; its key is RFC 6455's sample nonce, so
    /// a seed can carry the right accept key (`s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`).
    pub const BACKEND_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// The subprotocols [`backend_answer`] offers.
    pub const OFFERED: [&str; 2] = ["chat", "superchat"];

    /// How the backend's answer was taken.
    #[derive(Debug)]
    pub enum BackendAnswer {
        /// A valid 101: the headers passed to the client and the bytes after the head.
        Upgraded {
            /// Headers forwarded to the client.
            headers: HeaderMap,
            /// Bytes the backend sent after its 101.
            leftover: Vec<u8>,
        },
        /// Another final status, relayed with its headers and body.
        Refused {
            /// The status code.
            status: u16,
            /// The backend's headers.
            headers: HeaderMap,
            /// The body's length.
            body_len: usize,
        },
        /// A 502/504 reason.
        Failed(String),
    }

    thread_local! {
        /// One runtime for every input: building one per input would dwarf the parsing.
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            // Building a runtime without I/O or timers only fails if the OS refuses a thread
            // parker, which a fuzzing process cannot run without anyway.
            .expect("a current-thread runtime");
    }

    /// For the fuzz targets: sends the upgrade request to a backend that answers `bytes` and
    /// then closes, over an in-memory stream, and runs the backend client's answer reading
    /// and 101 checks on it.
    pub fn backend_answer(bytes: &[u8]) -> BackendAnswer {
        RUNTIME.with(|rt| {
            rt.block_on(async {
                let (ours, mut theirs) = tokio::io::duplex(bytes.len() + 4096);
                // Both fit in the pipe's buffer, so neither write waits for a reader.
                if theirs.write_all(bytes).await.is_err() || theirs.shutdown().await.is_err() {
                    return BackendAnswer::Failed("in-memory pipe".into());
                }
                let request = format!(
                    "GET / HTTP/1.1\r\nhost: fuzz\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                     sec-websocket-key: {BACKEND_KEY}\r\nsec-websocket-version: 13\r\n\
                     sec-websocket-protocol: chat, superchat\r\n\r\n"
                );
                let offered = OFFERED.map(String::from);
                let answer = handshake(
                    Stream::Memory(ours),
                    request.as_bytes(),
                    BACKEND_KEY,
                    &offered,
                )
                .await;
                drop(theirs);
                match answer {
                    Ok(Answer::Upgraded {
                        headers, leftover, ..
                    }) => BackendAnswer::Upgraded {
                        headers,
                        leftover: leftover.to_vec(),
                    },
                    Ok(Answer::Refused(res)) => BackendAnswer::Refused {
                        status: res.status().as_u16(),
                        body_len: res.body().len(),
                        headers: res.headers().clone(),
                    },
                    Err(e) => BackendAnswer::Failed(e.to_string()),
                }
            })
        })
    }

    /// A chunked body's data and where it ended (`None`: not within the bytes), or
    /// where its syntax broke.
    pub type Chunks = Result<(Vec<u8>, Option<usize>), usize>;

    /// What the hand-written HTTP/1.1 path made of a backend's response (see
    /// [`plain_response`]).
    #[derive(Debug, PartialEq, Eq)]
    pub struct PlainResponse {
        /// The head's status, framing (`Debug`), forwarded field names (lowercase), and
        /// whether the connection may be kept; or why the head was not taken.
        pub head: Result<(u16, String, Vec<String>, bool), String>,
        /// A chunked body's data, and where the body ended in the bytes after the head
        /// (`None`: not within them); or where its syntax broke.
        pub chunked: Option<Chunks>,
    }

    /// For the fuzz targets: `bytes` as a backend's answer to a `GET` (`head_only`
    /// false) or `HEAD`: its head parsed, and a chunked body followed in pieces of `step`
    /// bytes (at least 1), which must come to what it does whole.
    pub fn plain_response(bytes: &[u8], head_only: bool, step: usize) -> PlainResponse {
        use crate::backend::http::raw::{Framing, parse_for_fuzzing};
        let parsed = parse_for_fuzzing(bytes, head_only);
        let mut chunked = None;
        let head = parsed.map(|(len, head, keep)| {
            let mut names = Vec::new();
            head.each(|n, _| names.push(String::from_utf8_lossy(n).to_ascii_lowercase()));
            if head.framing == Framing::Chunked {
                chunked = Some(follow_chunks(&bytes[len..], step.max(1)));
            }
            (head.status, format!("{:?}", head.framing), names, keep)
        });
        PlainResponse { head, chunked }
    }

    /// A chunked body's data and end in `body`, followed in pieces of `step`.
    fn follow_chunks(body: &[u8], step: usize) -> Chunks {
        let mut c = crate::proto::h1_scan::ChunkedBody::default();
        let (mut data, mut at) = (Vec::new(), 0);
        // Bounded: each step follows at least a byte of a non-empty piece.
        while at < body.len() {
            let piece = &body[at..at.saturating_add(step).min(body.len())];
            let (n, d, ended) = c.step(piece).map_err(|e| at + e.at)?;
            data.extend_from_slice(&piece[..d]);
            at += n;
            if ended {
                return Ok((data, Some(at)));
            }
        }
        Ok((data, None))
    }

    /// For the fuzz targets: the configuration parser and validation (`Config::parse`).
    pub fn config(text: &str) -> Result<crate::Config, crate::ConfigError> {
        crate::Config::parse(text, "fuzz")
    }

    /// For the fuzz targets: request-path normalisation.
    pub fn path(s: &str) -> Result<String, crate::proto::path::PathError> {
        crate::proto::path::normalize_path(s)
    }
}
