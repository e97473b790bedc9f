//! JWT at the door: tokens from the header, a subprotocol entry, a cookie or the query,
//! verified with a key file, a secret or a JWKS served on loopback (plain and TLS, with
//! rotation and outages); every bad token is a 401 before any backend contact; a live
//! socket is closed at its token's `exp`. Keys are made by the tests, never committed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair,
};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use wsgate::Outcome;

use crate::support::backend::{Backend, Handshake, echo};
use crate::support::ca::TestCa;
use crate::support::frame::Frame;
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{eventually, http, raw};

/// A signing key made for the test (signing with `ring`: wsgate's own provider verifies
/// only), with its public half as PEM and as a JWK.
struct Signer {
    alg: &'static str,
    key: Key,
    public_pem: String,
    jwk: Value,
    kid: Option<String>,
}

enum Key {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(Arc<RsaKeyPair>, &'static dyn ring::signature::RsaEncoding),
}

fn ec_signer() -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &pair.serialize_der(),
        &rng,
    )
    .expect("EC key");
    let point = key.public_key().as_ref().to_vec();
    Signer {
        alg: "ES256",
        jwk: json!({ "kty": "EC", "crv": "P-256", "alg": "ES256", "x": b64(&point[1..33]), "y": b64(&point[33..]) }),
        key: Key::Ec(key),
        public_pem: pair.public_key_pem(),
        kid: None,
    }
}

fn ed_signer() -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pair.serialize_der()).expect("Ed key");
    Signer {
        alg: "EdDSA",
        jwk: json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": b64(key.public_key().as_ref()) }),
        key: Key::Ed(key),
        public_pem: pair.public_key_pem(),
        kid: None,
    }
}

/// One RSA key per test run (ring does not generate RSA keys; the `rsa` crate does, slowly).
fn rsa_signer(alg: &'static str) -> Signer {
    static KEY: OnceLock<(Arc<RsaKeyPair>, String)> = OnceLock::new();
    let (key, public) = KEY.get_or_init(|| {
        use rsa::Generate;
        let key = rsa::PrivateKey::generate();
        let der = key.to_pkcs8_der().expect("PKCS#8");
        let public = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI");
        let pair = RsaKeyPair::from_pkcs8(der.as_bytes()).expect("ring takes the RSA key");
        (Arc::new(pair), public)
    });
    let parts = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
    let encoding: &'static dyn ring::signature::RsaEncoding = match alg {
        "RS256" => &ring::signature::RSA_PKCS1_SHA256,
        "PS256" => &ring::signature::RSA_PSS_SHA256,
        other => panic!("no RSA signer for {other}"),
    };
    Signer {
        alg,
        jwk: json!({ "kty": "RSA", "alg": alg, "n": b64(&parts.n), "e": b64(&parts.e) }),
        key: Key::Rsa(key.clone(), encoding),
        public_pem: public.clone(),
        kid: None,
    }
}

impl Signer {
    fn with_kid(mut self, kid: &str) -> Signer {
        self.kid = Some(kid.into());
        self
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = json!({ "alg": self.alg, "typ": "JWT" });
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        jws(&header, claims, |input| match &self.key {
            Key::Ec(k) => k
                .sign(&SystemRandom::new(), input)
                .unwrap()
                .as_ref()
                .to_vec(),
            Key::Ed(k) => k.sign(input).as_ref().to_vec(),
            Key::Rsa(k, encoding) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(*encoding, &SystemRandom::new(), input, &mut out)
                    .unwrap();
                out
            }
        })
    }

    fn jwk(&self) -> Value {
        let mut jwk = self.jwk.clone();
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }
}

/// A compact JWS: `header.claims.signature`, the signature made by `sign` over the first two.
fn jws(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// An HS256 token under `secret`.
fn hs256(secret: &[u8], claims: &Value) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    jws(&json!({ "alg": "HS256", "typ": "JWT" }), claims, |input| {
        ring::hmac::sign(&key, input).as_ref().to_vec()
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims valid for an hour, for `sub` alice.
fn claims() -> Value {
    json!({ "sub": "alice", "exp": now() + 3600, "iat": now(), "aud": "chat", "iss": "https://idp.test", "email": "alice@example.test" })
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A temporary directory holding one file.
fn file(name: &str, contents: &str) -> (TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write file");
    (dir, path.display().to_string())
}

/// A route to `backend` with a `jwt:` section (lines indented six spaces).
fn jwt_route(backend: &Backend, jwt: &str) -> String {
    route(
        "app",
        "/app",
        &backend.url("/ws"),
        &format!("    jwt:\n{jwt}"),
    )
}

/// The status of an upgrade to `/app` carrying `token` as a bearer token.
async fn upgrade_status(addr: SocketAddr, token: String) -> u16 {
    let auth = bearer(&token);
    let req = http::upgrade_request(addr, "/app", &[("Authorization", &auth)]);
    http::exchange(addr, req).await.status()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_valid_token_opens_the_socket_with_its_claims_as_headers_and_sub_as_identity() {
    let signer = ec_signer();
    let (_dir, key) = file("key.pem", &signer.public_pem);
    let backend = Backend::echo().await;
    let jwt = format!(
        "      key_file: {key}\n      algorithm: ES256\n      audiences: [chat]\n      issuers: ['https://idp.test']\n      claim_headers: {{ sub: X-Auth-Sub, email: X-Auth-Email }}\n"
    );
    let mut proxy = Proxy::start(&yaml(&jwt_route(&backend, &jwt))).await;
    let token = signer.sign(&claims());
    let auth = bearer(&token);
    let (head, mut client) = raw::upgrade_with(
        proxy.addr(),
        "/app",
        &[("Authorization", &auth), ("X-Auth-Sub", "mallory")],
    )
    .await;
    assert_eq!(head.status(), 101, "{head:?}");
    client.send(Frame::text("hi")).await;
    assert_eq!(client.recv_frame().await.payload, b"hi");
    let seen = backend.log.request();
    assert_eq!(
        seen.header_all("x-auth-sub"),
        ["alice"],
        "client copy removed"
    );
    assert_eq!(seen.header("x-auth-email"), Some("alice@example.test"));
    client.send(Frame::close(1000, "")).await;
    client.recv_close().await;
    let report = proxy.next_report().await;
    assert_eq!(report.identity.as_deref(), Some("alice"), "{report:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn bad_tokens_are_401_with_a_challenge_before_any_backend_contact() {
    let signer = ec_signer();
    let other = ec_signer();
    let (_dir, key) = file("key.pem", &signer.public_pem);
    let backend = Backend::echo().await;
    let jwt = format!(
        "      key_file: {key}\n      algorithm: ES256\n      audiences: [chat]\n      leeway: 5s\n"
    );
    let proxy = Proxy::start(&yaml(&jwt_route(&backend, &jwt))).await;
    let mut expired = claims();
    expired["exp"] = json!(now() - 60);
    let mut early = claims();
    early["nbf"] = json!(now() + 600);
    let mut wrong_aud = claims();
    wrong_aud["aud"] = json!("billing");
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut exp_as_text = claims();
    exp_as_text["exp"] = json!("never");
    let none = jws(&json!({"alg": "none", "typ": "JWT"}), &claims(), |_| {
        Vec::new()
    });
    // Algorithm confusion: an HMAC over the token keyed with the public key's PEM text.
    let confused = hs256(signer.public_pem.as_bytes(), &claims());
    let rs256 = rsa_signer("RS256").sign(&claims());
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "missing"),
        ("garbage", Some("not-a-jwt".into()), "malformed"),
        ("expired", Some(signer.sign(&expired)), "expired"),
        ("not yet valid", Some(signer.sign(&early)), "not_yet_valid"),
        ("wrong audience", Some(signer.sign(&wrong_aud)), "audience"),
        ("no exp", Some(signer.sign(&no_exp)), "missing_claim"),
        ("exp as text", Some(signer.sign(&exp_as_text)), "malformed"),
        ("another key", Some(other.sign(&claims())), "bad_signature"),
        ("alg none", Some(none), "malformed"),
        ("HS256 with the public key", Some(confused), "algorithm"),
        ("RS256 on an ES256 key", Some(rs256), "algorithm"),
    ];
    for (what, token, reason) in &cases {
        let auth = token.as_deref().map(bearer);
        let extra: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let head = http::exchange(
            proxy.addr(),
            http::upgrade_request(proxy.addr(), "/app", &extra),
        )
        .await;
        assert_eq!(head.status(), 401, "{what}: {head:?}");
        let challenge = head.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"wsgate\""),
            "{what}: {challenge}"
        );
        if *reason != "missing" {
            assert!(
                challenge.contains("error=\"invalid_token\""),
                "{what}: {challenge}"
            );
        }
        if let Some(t) = token {
            assert!(
                !head.body_text().contains(t.as_str()),
                "{what}: the token is echoed"
            );
        }
        let counted = proxy
            .metric(&format!(
                "wsgate_auth_failures_total{{route=\"app\",reason=\"{reason}\"}}"
            ))
            .unwrap_or(0.0);
        assert!(counted >= 1.0, "{what}: no failure counted as {reason}");
    }
    assert_eq!(backend.log.accepted(), 0, "the backend was contacted");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn a_token_offered_as_a_subprotocol_is_taken_out_and_the_marker_answered() {
    let signer = ed_signer();
    let (_dir, key) = file("key.pem", &signer.public_pem);
    let jwt = format!(
        "      key_file: {key}\n      algorithm: EdDSA\n      token: {{ header: false, subprotocol: wsgate.bearer }}\n"
    );
    let token = signer.sign(&claims());
    let offer = format!("chat, wsgate.bearer, wsgate.bearer.{token}");
    let offer_header = [("Sec-WebSocket-Protocol", offer.as_str())];

    // The backend picks nothing: wsgate names the marker, so a browser accepts the 101.
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&yaml(&jwt_route(&backend, &jwt))).await;
    let (head, _client) = raw::upgrade_with(proxy.addr(), "/app", &offer_header).await;
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(head.header("sec-websocket-protocol"), Some("wsgate.bearer"));
    let seen = backend.log.request();
    assert_eq!(
        seen.header_all("sec-websocket-protocol"),
        ["chat"],
        "token left in the offer"
    );

    // The backend picks an offered protocol of its own: that one is answered.
    let chooser = Backend::start(Handshake::Protocol("chat"), None, echo).await;
    let proxy = Proxy::start(&yaml(&jwt_route(&chooser, &jwt))).await;
    let (head, _client) = raw::upgrade_with(proxy.addr(), "/app", &offer_header).await;
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(head.header("sec-websocket-protocol"), Some("chat"));

    // Only the token, no other offer: the backend sees no Sec-WebSocket-Protocol at all.
    let alone = format!("wsgate.bearer, wsgate.bearer.{token}");
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&yaml(&jwt_route(&backend, &jwt))).await;
    let (head, _client) =
        raw::upgrade_with(proxy.addr(), "/app", &[("Sec-WebSocket-Protocol", &alone)]).await;
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(head.header("sec-websocket-protocol"), Some("wsgate.bearer"));
    assert!(
        backend
            .log
            .request()
            .header("sec-websocket-protocol")
            .is_none()
    );

    // With `header: false`, a bearer header is not looked at.
    let auth = bearer(&token);
    let head = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/app", &[("Authorization", &auth)]),
    )
    .await;
    assert_eq!(head.status(), 401, "{head:?}");
}

#[tokio::test]
async fn tokens_are_read_from_a_cookie_or_the_query_and_hs256_from_a_secret_file() {
    let secret = "0123456789abcdef0123456789abcdef-test-only";
    let (_dir, secret_file) = file("secret", &format!("{secret}\n"));
    let token = hs256(secret.as_bytes(), &claims());
    let backend = Backend::echo().await;
    let jwt = format!(
        "      secret_file: {secret_file}\n      token: {{ cookie: session, query: access_token }}\n"
    );
    let proxy = Proxy::start(&yaml(&jwt_route(&backend, &jwt))).await;
    let cookie = format!("theme=dark; session={token}");
    let (head, _c) = raw::upgrade_with(proxy.addr(), "/app", &[("Cookie", &cookie)]).await;
    assert_eq!(head.status(), 101, "cookie: {head:?}");
    let (head, _c) =
        raw::upgrade_with(proxy.addr(), &format!("/app?x=1&access_token={token}"), &[]).await;
    assert_eq!(head.status(), 101, "query: {head:?}");
    // An HS256 token made with another secret.
    let forged = hs256(b"another secret of thirty-two bytes!!", &claims());
    let (head, _c) =
        raw::upgrade_with(proxy.addr(), &format!("/app?access_token={forged}"), &[]).await;
    assert_eq!(head.status(), 401, "{head:?}");
}

#[tokio::test]
async fn plain_requests_on_a_jwt_route_need_a_token_too_and_get_its_claims() {
    use crate::support::http_backend::{HttpBackend, text};
    let signer = ec_signer();
    let (_dir, key) = file("key.pem", &signer.public_pem);
    let backend = HttpBackend::start(|_req| async { hyper::Response::new(text("page")) }).await;
    let jwt = format!(
        "      key_file: {key}\n      algorithm: ES256\n      claim_headers: {{ sub: X-Auth-Sub }}\n"
    );
    let routes = route(
        "app",
        "/app",
        &format!("ws://{}", backend.addr),
        &format!("    jwt:\n{jwt}"),
    );
    let proxy = Proxy::start(&yaml(&routes)).await;
    let head = http::exchange(
        proxy.addr(),
        format!("GET /app/page HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr()),
    )
    .await;
    assert_eq!(head.status(), 401, "{head:?}");
    assert!(head.header("www-authenticate").is_some());
    assert_eq!(backend.stats.accepted(), 0);

    let token = signer.sign(&claims());
    let head = http::exchange(
        proxy.addr(),
        format!(
            "GET /app/page HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nX-Auth-Sub: mallory\r\nConnection: close\r\n\r\n",
            proxy.addr()
        ),
    )
    .await;
    assert_eq!(head.status(), 200, "{head:?}");
    let seen = backend.stats.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("x-auth-sub"), ["alice"], "client copy replaced");
}

/// A JWKS server on loopback (optionally TLS): serves whatever the test sets, counts GETs.
struct JwksServer {
    addr: SocketAddr,
    doc: Arc<Mutex<(u16, String)>>,
    gets: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(keys: &[&Signer], tls: Option<Arc<rustls::ServerConfig>>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let doc = Arc::new(Mutex::new((200, String::new())));
        let gets = Arc::new(AtomicUsize::new(0));
        let (d, g) = (doc.clone(), gets.clone());
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            for _ in 0..10_000 {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (d, g, acceptor) = (d.clone(), g.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        g.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = d.lock().unwrap().clone();
                        let mut res = hyper::Response::new(Full::new(Bytes::from(body)));
                        *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        async move { Ok::<_, std::convert::Infallible>(res) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match acceptor {
                        Some(a) => match a.accept(tcp).await {
                            Ok(tls) => {
                                http.serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                    .await
                            }
                            Err(_) => return,
                        },
                        None => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                                .await
                        }
                    };
                });
            }
        });
        let server = JwksServer {
            addr,
            doc,
            gets,
            task,
        };
        server.serve(keys);
        server
    }

    fn serve(&self, keys: &[&Signer]) {
        let set = json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() });
        *self.doc.lock().unwrap() = (200, set.to_string());
    }

    fn fail(&self) {
        self.doc.lock().unwrap().0 = 500;
    }

    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_jwks_over_tls_rotates_refetches_unknown_kids_once_and_survives_a_reload() {
    let ca = TestCa::new();
    let a = ec_signer().with_kid("a");
    let b = rsa_signer("RS256").with_kid("b");
    let jwks = JwksServer::start(&[&a], Some(ca.server_config())).await;
    let backend = Backend::echo().await;
    let jwt = format!(
        "      jwks: {{ url: 'https://localhost:{}/keys.json', refresh: 1h, tls_ca: {} }}\n",
        jwks.addr.port(),
        ca.ca_pem().display()
    );
    let proxy = Proxy::start(&yaml(&jwt_route(&backend, &jwt))).await;
    let addr = proxy.addr();
    let upgrade = |token: String| upgrade_status(addr, token);
    eventually("the JWKS is fetched at start", || {
        proxy.metric("wsgate_jwks_fetches_total{route=\"app\",result=\"ok\"}") == Some(1.0)
    })
    .await;
    assert_eq!(proxy.metric("wsgate_jwks_keys{route=\"app\"}"), Some(1.0));
    let last = proxy.metric("wsgate_jwks_last_success_timestamp_seconds{route=\"app\"}");
    assert!(last.unwrap_or(0.0) >= (now() - 60) as f64, "{last:?}");
    assert_eq!(upgrade(a.sign(&claims())).await, 101);

    // Rotation: key b appears; its first token makes wsgate fetch again.
    jwks.serve(&[&a, &b]);
    assert_eq!(upgrade(b.sign(&claims())).await, 101, "rotated key");
    assert_eq!(jwks.gets(), 2);
    assert_eq!(proxy.metric("wsgate_jwks_keys{route=\"app\"}"), Some(2.0));

    // Made-up kids within the minute cause no further fetch.
    for i in 0..5 {
        let stranger = ec_signer().with_kid(&format!("x{i}"));
        assert_eq!(upgrade(stranger.sign(&claims())).await, 401);
    }
    assert_eq!(
        jwks.gets(),
        2,
        "unknown kids fetched more than once a minute"
    );
    assert!(
        proxy.metric("wsgate_auth_failures_total{route=\"app\",reason=\"unknown_kid\"}")
            >= Some(5.0)
    );

    // A reload that changes the route but not its JWKS keeps the keys fetched: the key
    // server is down meanwhile, and nothing is fetched anew.
    jwks.fail();
    let changed = format!("{jwt}      leeway: 10s\n");
    proxy.reload_ok(&yaml(&jwt_route(&backend, &changed))).await;
    assert_eq!(
        upgrade(b.sign(&claims())).await,
        101,
        "keys kept across the reload"
    );
    assert_eq!(jwks.gets(), 2);
}

#[tokio::test]
async fn while_the_jwks_is_down_the_keys_held_still_verify() {
    let a = ed_signer().with_kid("a");
    let jwks = JwksServer::start(&[&a], None).await;
    jwks.fail();
    let backend = Backend::echo().await;
    let jwt = format!(
        "      jwks: {{ url: 'http://{}/jwks', refresh: 100ms }}\n",
        jwks.addr
    );
    let proxy = Proxy::start(&yaml(&jwt_route(&backend, &jwt))).await;
    let addr = proxy.addr();
    let upgrade = |token: String| upgrade_status(addr, token);
    // No key was ever fetched: 503, the client is not at fault.
    assert_eq!(upgrade(a.sign(&claims())).await, 503);
    let ok = "wsgate_jwks_fetches_total{route=\"app\",result=\"ok\"}";
    let failed = "wsgate_jwks_fetches_total{route=\"app\",result=\"failed\"}";
    jwks.serve(&[&a]);
    eventually("a fetch succeeds", || proxy.metric(ok) >= Some(1.0)).await;
    assert_eq!(upgrade(a.sign(&claims())).await, 101);
    jwks.fail();
    let failures = proxy.metric(failed).unwrap_or(0.0);
    eventually("two refreshes fail", || {
        proxy.metric(failed) >= Some(failures + 2.0)
    })
    .await;
    assert_eq!(upgrade(a.sign(&claims())).await, 101, "stale keys served");
    assert_eq!(proxy.metric("wsgate_jwks_keys{route=\"app\"}"), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn a_live_socket_is_closed_at_its_tokens_exp_with_1008() {
    let signer = rsa_signer("PS256");
    let (_dir, key) = file("key.pem", &signer.public_pem);
    let backend = Backend::echo().await;
    let jwt = format!("      key_file: {key}\n      algorithm: PS256\n      leeway: 0s\n");
    let mut proxy = Proxy::builder(&yaml(&jwt_route(&backend, &jwt)))
        .paused()
        .start()
        .await;
    let mut c = claims();
    c["exp"] = json!(now() + 20);
    let auth = bearer(&signer.sign(&c));
    let (head, mut client) =
        raw::upgrade_with(proxy.addr(), "/app", &[("Authorization", &auth)]).await;
    assert_eq!(head.status(), 101, "{head:?}");
    let opened = tokio::time::Instant::now();
    client.send(Frame::text("still here")).await;
    assert_eq!(client.recv_frame().await.payload, b"still here");
    // Virtual time: the 20 s pass in a few ticks of the metronome's real time.
    let close = match client.try_recv(Duration::from_secs(60)).await {
        Ok(Some(frame)) => frame,
        other => panic!("no Close at exp: {other:?}"),
    };
    let waited = opened.elapsed();
    assert_eq!(close.close_code(), Some(1008));
    assert_eq!(close.close_reason(), "token expired");
    assert!(
        waited >= Duration::from_secs(18) && waited <= Duration::from_secs(21),
        "closed {waited:?} after the upgrade; exp was 20 s away"
    );
    eventually("the backend got the close", || {
        backend.log.close().is_some()
    })
    .await;
    assert_eq!(
        backend.log.close().unwrap(),
        (1008, "token expired".to_string())
    );
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::AuthExpired, "{report:?}");
    assert_eq!(report.identity.as_deref(), Some("alice"));
    proxy.assert_drained().await;
}

#[test]
fn jwt_config_mistakes_are_refused_with_their_place() {
    let signer = ec_signer();
    let (_dir, key) = file("key.pem", &signer.public_pem);
    let (_sdir, short) = file("secret", "too short\n");
    let cases = [
        (format!("{{ key_file: {key} }}"), "needs `algorithm`"),
        (
            format!("{{ key_file: {key}, algorithm: RS256 }}"),
            "not a PEM public key for RS256",
        ),
        (
            format!("{{ key_file: {key}, algorithm: HS256 }}"),
            "secret_file",
        ),
        (
            format!(
                "{{ key_file: {key}, algorithm: ES256, jwks: {{ url: 'http://127.0.0.1:1/' }} }}"
            ),
            "exactly one of",
        ),
        (
            "{ jwks: { url: 'ftp://idp/keys' } }".to_string(),
            "http:// or https://",
        ),
        (
            "{ jwks: { url: 'http://idp/keys' }, algorithm: ES256 }".to_string(),
            "comes from the key set",
        ),
        (format!("{{ secret_file: {short} }}"), "at least 32"),
        (
            format!("{{ key_file: {key}, algorithm: ES256, expired_close_code: 1006 }}"),
            "expired_close_code",
        ),
        (
            format!("{{ key_file: {key}, algorithm: ES256, token: {{ header: false }} }}"),
            "at least one place",
        ),
        (
            format!(
                "{{ key_file: {key}, algorithm: ES256, claim_headers: {{ sub: 'bad header' }} }}"
            ),
            "not a header name",
        ),
        (
            format!("{{ key_file: {key}, algorithm: none }}"),
            "unknown variant",
        ),
    ];
    for (jwt, expected) in &cases {
        let text = format!(
            "listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n  - name: app\n    path: /app\n    backends: [\"ws://127.0.0.1:1/\"]\n    jwt: {jwt}\n"
        );
        let err = match wsgate::Config::parse(&text, "test.yaml") {
            Ok(_) => panic!("accepted: {jwt}"),
            Err(e) => e.to_string(),
        };
        assert!(err.starts_with("test.yaml:"), "no place: {err}");
        assert!(
            err.contains(expected),
            "{jwt}: expected `{expected}` in: {err}"
        );
        assert!(!err.contains("too short"), "a secret in an error: {err}");
    }
    // A query token and a logged query do not go together.
    let text = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n  - name: app\n    path: /app\n    backends: [\"ws://127.0.0.1:1/\"]\n    log_query: true\n    jwt: {{ key_file: {key}, algorithm: ES256, token: {{ query: t }} }}\n"
    );
    let err = wsgate::Config::parse(&text, "test.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("log_query"), "{err}");
}

#[tokio::test]
async fn a_rotated_key_file_takes_effect_on_reload_without_closing_the_routes_sockets() {
    let (old, new) = (ec_signer(), ec_signer());
    let (dir, key) = file("key.pem", &old.public_pem);
    let backend = Backend::echo().await;
    let jwt = format!("      key_file: {key}\n      algorithm: ES256\n");
    let config = yaml(&jwt_route(&backend, &jwt));
    let parsed = crate::support::proxy::parse(&config, "test.yaml");
    let watched = wsgate::watched_files(std::path::Path::new("test.yaml"), &parsed);
    assert!(
        watched.iter().any(|f| f.display().to_string() == key),
        "{watched:?}"
    );
    let proxy = Proxy::start(&config).await;
    let auth = bearer(&old.sign(&claims()));
    let (head, mut open) =
        raw::upgrade_with(proxy.addr(), "/app", &[("Authorization", &auth)]).await;
    assert_eq!(head.status(), 101, "{head:?}");

    std::fs::write(dir.path().join("key.pem"), &new.public_pem).unwrap();
    proxy.reload_ok(&config).await;
    assert_eq!(
        upgrade_status(proxy.addr(), new.sign(&claims())).await,
        101,
        "the new key"
    );
    assert_eq!(
        upgrade_status(proxy.addr(), old.sign(&claims())).await,
        401,
        "the old key"
    );
    // The route is unchanged: its socket opened under the old key is still relayed.
    open.send(Frame::text("still open")).await;
    assert_eq!(open.recv_frame().await.payload, b"still open");
}

#[tokio::test]
async fn far_and_fractional_exp_values_are_taken_without_harm() {
    let signer = ec_signer();
    let (_dir, key) = file("key.pem", &signer.public_pem);
    let backend = Backend::echo().await;
    let jwt = format!("      key_file: {key}\n      algorithm: ES256\n");
    let proxy = Proxy::start(&yaml(&jwt_route(&backend, &jwt))).await;
    // The largest integer, and a fractional time (JWT NumericDate allows both).
    for exp in [
        json!(u64::MAX),
        json!(i64::MAX as u64 - 1_000_000),
        json!(now() as f64 + 3600.5),
    ] {
        let mut c = claims();
        c["exp"] = exp.clone();
        let auth = bearer(&signer.sign(&c));
        let (head, mut client) =
            raw::upgrade_with(proxy.addr(), "/app", &[("Authorization", &auth)]).await;
        assert_eq!(head.status(), 101, "exp {exp}: {head:?}");
        client.send(Frame::text("hi")).await;
        assert_eq!(client.recv_frame().await.payload, b"hi", "exp {exp}");
    }
}
