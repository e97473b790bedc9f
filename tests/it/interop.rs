//! Interop with a real third-party client: Python's `websockets` library runs
//! `tests/interop/python_echo.py` (echo of every frame-length class up to 1 MiB,
//! ordering, fragmentation, ping, close code echo) against wsgate's built-in echo
//! route, over `ws://`, over `wss://` with a self-signed listener, and over
//! `wss://` with a certificate chain that Python verifies.
//!
//! Needs `python3` (or `$PYTHON`) with `websockets` >= 13; `scripts/test.sh`
//! installs it. When it is missing these tests FAIL, loudly: an interop test that
//! skips itself would report a pass for a check that never ran.

use std::process::Stdio;
use std::time::Duration;

use crate::support::ca::TestCa;
use crate::support::proxy::Proxy;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// The client script, run as a child process.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/python_echo.py");

/// Bound on one run of the script: it normally takes 1–3 s; each of its checks
/// has its own 10 s timeout, so a hang shows up as a failed check well before this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How to install the client, for the failure messages.
const INSTALL_HINT: &str =
    "run `bash scripts/test.sh` (installs it), or `python3 -m pip install 'websockets>=13,<16'`";

/// Plain and self-signed TLS listeners (in that order), `extra_listeners` after them,
/// and the built-in echo route. Limits are set explicitly, whatever the defaults,
/// so the script's 1 MiB frames and 3 MiB fragmented message fit.
fn config(extra_listeners: &str) -> String {
    [
        "listeners:\n",
        "  - { bind: \"127.0.0.1:0\" }\n",
        "  - { bind: \"127.0.0.1:0\", tls: { self_signed: true } }\n",
        extra_listeners,
        "defaults: { max_frame_bytes: 16MiB, max_message_bytes: 64MiB }\n",
        "routes:\n",
        "  - { name: echo, path: /echo, echo: true }\n",
    ]
    .concat()
}

/// The interpreter: `$PYTHON`, else `python3` (the same rule as scripts/test.sh).
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Fails the test unless the interpreter exists and can import the asyncio client.
async fn require_python_websockets() {
    let python = python();
    let probe = Command::new(&python)
        .args([
            "-c",
            "import websockets, websockets.asyncio.client; print(websockets.__version__)",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(SCRIPT_TIMEOUT, probe).await {
        Err(_) => panic!("`{python}` did not answer within {SCRIPT_TIMEOUT:?}"),
        Ok(Err(e)) => {
            panic!("cannot run `{python}` ({e}): the Python interop tests need it; {INSTALL_HINT}")
        }
        Ok(Ok(output)) => output,
    };
    assert!(
        output.status.success(),
        "`{python}` cannot import websockets >= 13 (websockets.asyncio.client): {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "client: {python}, websockets {}",
        String::from_utf8_lossy(&output.stdout).trim()
    );
}

/// Reads a child's pipe to the end, lossily decoded.
async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> String {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        // A read error only truncates what the failure message shows.
        let _ = pipe.read_to_end(&mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs the script against `url`, prints its table, and asserts that it exited 0.
async fn run_script(url: &str, extra_args: &[&str]) {
    require_python_websockets().await;
    let python = python();
    let mut child = Command::new(&python)
        .arg(SCRIPT)
        .args(["--url", url])
        .args(extra_args)
        // Unbuffered, so a run killed by the timeout still shows how far it got.
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{python} {SCRIPT}`: {e}"));
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));

    let status = match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait()).await {
        Ok(status) => Some(status.expect("wait for the interop script")),
        Err(_) => {
            // Killing closes its pipes, so the readers below finish.
            let _ = child.kill().await;
            None
        }
    };
    let stdout = stdout.await.expect("stdout reader");
    let stderr = stderr.await.expect("stderr reader");
    println!(
        "$ {python} {SCRIPT} --url {url} {}\n{stdout}",
        extra_args.join(" ")
    );
    if !stderr.is_empty() {
        println!("stderr:\n{stderr}");
    }
    match status {
        None => panic!(
            "interop script still running after {SCRIPT_TIMEOUT:?}, killed\n{stdout}{stderr}"
        ),
        Some(status) => assert!(
            status.success(),
            "interop script failed ({status}) against {url}\n{stdout}{stderr}"
        ),
    }
}

/// Runs the script, then checks that every relayed connection is gone and that
/// wsgate shuts down.
async fn run_and_drain(proxy: Proxy, url: &str, extra_args: &[&str]) {
    run_script(url, extra_args).await;
    proxy.assert_drained().await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn python_websockets_over_ws() {
    let proxy = Proxy::start(&config("")).await;
    let url = format!("ws://{}/echo", proxy.addrs[0]);
    run_and_drain(proxy, &url, &[]).await;
}

#[tokio::test]
async fn python_websockets_over_wss_self_signed() {
    let proxy = Proxy::start(&config("")).await;
    let url = format!("wss://{}/echo", proxy.addrs[1]);
    // `self_signed: true` makes a throw-away certificate in memory at start-up:
    // there is no CA file a client could trust, so verification has to be off.
    // This is acceptable only for this listener, whose point is TLS framing (records
    // carrying WebSocket frames, close_notify); certificate verification against a
    // real chain is covered by the next test, with no --insecure.
    run_and_drain(proxy, &url, &["--insecure"]).await;
}

#[tokio::test]
async fn python_websockets_over_wss_verified_ca() {
    let ca = TestCa::new();
    let listener = format!(
        "  - {{ bind: \"127.0.0.1:0\", tls: {} }}\n",
        ca.listener_tls_yaml()
    );
    let proxy = Proxy::start(&config(&listener)).await;
    // By name: exercises SNI and hostname verification of the `localhost` SAN.
    let url = format!("wss://localhost:{}/echo", proxy.addrs[2].port());
    let cafile = ca.ca_pem();
    let cafile = cafile.to_str().expect("temp dir path is UTF-8");
    run_and_drain(proxy, &url, &["--cafile", cafile]).await;
}
