//! Helpers for the lifecycle tests: wsgate in-process with its [`Running`] handle
//! exposed, wsgate as a child process (the real binary), a CA that issues leaves
//! with chosen serial numbers, TLS clients that return the served certificate,
//! and the process's resident memory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use wsgate::{CloseReport, Config, Running};

use super::{STEP, eventually, within};

/// wsgate in-process, with the [`Running`] handle public (reload, metrics, listeners).
pub struct Gate {
    pub running: Running,
    pub reports: broadcast::Receiver<CloseReport>,
    shutdown: CancellationToken,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Gate {
    /// Runs wsgate with an already parsed config.
    pub async fn run(config: Config) -> Gate {
        let shutdown = CancellationToken::new();
        let running = within("wsgate::run", wsgate::run(config, shutdown.clone()))
            .await
            .unwrap_or_else(|e| panic!("wsgate::run failed: {e}"));
        let reports = running.subscribe_reports();
        Gate {
            running,
            reports,
            shutdown,
        }
    }

    /// Runs wsgate with the config file at `path` (as the binary would load it).
    pub async fn from_file(path: &Path) -> Gate {
        let config = Config::load(path).unwrap_or_else(|e| panic!("config rejected: {e}"));
        Gate::run(config).await
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.running.listener_addrs()[0]
    }

    /// The next close report, within [`STEP`].
    pub async fn next_report(&mut self) -> CloseReport {
        within("close report", self.reports.recv())
            .await
            .expect("report channel")
    }

    /// Waits (bounded) until no connection is relayed any more.
    pub async fn assert_drained(&self) {
        eventually("active_connections() == 0", STEP, || {
            self.running.active_connections() == 0
        })
        .await;
    }

    /// The value of one sample line of the metrics text, e.g.
    /// `wsgate_config_reloads_total{result="error"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.running.metrics().render(), sample)
    }
}

/// The value of the sample line starting with `sample ` in a Prometheus text exposition.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("numeric sample"))
}

/// Writes `text` to `path` the way editors do: a temporary file renamed over it.
pub fn replace_file(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

/// This process's resident set size, in bytes (`VmRSS` of /proc/self/status).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// The wsgate binary running as a child process, its stderr collected.
pub struct Child {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Child {
    fn drop(&mut self) {
        // Only this child, by its own handle: never a broad kill.
        let _ = self.child.start_kill();
    }
}

impl Child {
    /// Starts `wsgate --config path` and waits (bounded) for its `listening addr=` line.
    pub async fn start(config: &Path) -> Child {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn wsgate");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        // Keeps reading to the end so the child never blocks on a full pipe.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
        let mut addr = None;
        eventually("wsgate logged `listening addr=`", STEP, || {
            addr = log.lock().unwrap().iter().find_map(|l| listening_addr(l));
            addr.is_some()
        })
        .await;
        Child {
            child,
            addr: addr.unwrap(),
            log,
        }
    }

    /// Sends a signal (`TERM`, `HUP`) to this child by its process id.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("child still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Everything logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether some log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Waits at most `timeout` for the child to exit.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for wsgate"))
    }

    /// Whether the child has not exited yet.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The address in a text-format `listening addr=IP:PORT …` line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(" listening addr=")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A certificate authority that issues `localhost` leaves with chosen serial numbers.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
}

/// A leaf certificate: its PEM files' contents and its DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Authority {
    pub fn new() -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "wsgate lifecycle CA");
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        Authority {
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `localhost` with this serial number.
    pub fn issue(&self, serial: u64) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A rustls client config trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Leaf {
    /// Writes the certificate and key to `cert` and `key`.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).expect("write cert");
        std::fs::write(key, &self.key_pem).expect("write key");
    }
}

/// Paths `DIR/cert.pem` and `DIR/key.pem`.
pub fn cert_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// A wss client over rustls whose server certificate can be inspected.
pub type TlsClient = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Connects `wss://localhost:PORT{path}` to `addr`, trusting `ca`; returns the
/// WebSocket and the leaf certificate (DER) the server presented.
pub async fn connect_tls(addr: SocketAddr, path: &str, ca: &Authority) -> (TlsClient, Vec<u8>) {
    within("wss connect", async {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let connector = tokio_rustls::TlsConnector::from(ca.client_config());
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake failed: {e}"));
        let leaf = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
        let url = format!("wss://localhost:{}{path}", addr.port());
        let (ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .unwrap_or_else(|e| panic!("upgrade over TLS failed: {e}"));
        (ws, leaf)
    })
    .await
}

/// The serial number of an X.509 certificate (DER).
pub fn serial_of(der: &[u8]) -> u64 {
    let (_, cert, _) = tlv(der);
    let (_, tbs, _) = tlv(cert);
    let (tag, first, rest) = tlv(tbs);
    // `[0] EXPLICIT version` comes first when present (v3 certificates).
    let (tag, serial, _) = if tag == 0xa0 {
        tlv(rest)
    } else {
        (tag, first, rest)
    };
    assert_eq!(tag, 0x02, "serialNumber is not an INTEGER");
    assert!(
        serial.len() <= 9,
        "serial wider than 64 bits: {serial:02x?}"
    );
    serial
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Splits one DER TLV off the front: (tag, content, rest).
fn tlv(buf: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = buf[0];
    let (len, head) = match buf[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let count = (n & 0x7f) as usize;
            let len = buf[2..2 + count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, 2 + count)
        }
    };
    (tag, &buf[head..head + len], &buf[head + len..])
}
