//! What the fast path writes: the 101 as hyper encodes it, writes bounded by the
//! write-stall timeout, and the cached `date` value.

use std::cell::RefCell;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::Response;
use hyper::header::{self, HeaderMap};
use tokio::io::AsyncWriteExt;

use crate::ingress::upgrade::Body;
use crate::shared::stream::Stream;
/// Writes the 101 as hyper encodes it (status line, the headers in order, its `date`
/// unless one is there), within `stall_after` (0: no limit) as the guard bounds hyper's
/// writes.
pub(super) async fn write_switch(
    stream: &mut Stream,
    res: &Response<Body>,
    stall_after: Duration,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256);
    encode_switch(res.headers(), &mut out);
    write_within(stream, &out, stall_after).await
}

/// Writes `bytes` whole and flushes them within `stall` (zero: no limit), as the guard
/// bounds hyper's writes (`TimedOut` past it); the timer is made only when the client
/// does not take them at once.
pub(crate) async fn write_within(
    stream: &mut Stream,
    bytes: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    tokio::pin!(write);
    match crate::backend::http::raw::poll_once(write.as_mut()).await {
        Poll::Ready(r) => r,
        Poll::Pending if stall.is_zero() => write.await,
        Poll::Pending => tokio::time::timeout(stall, write)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client stopped reading the response",
                ))
            }),
    }
}

/// A 101's head with `headers`, byte for byte as hyper writes it (lowercase names, one
/// line per value: a 101's headers hold none of the ones hyper folds or drops, which
/// `forwardable` removed from the backend's and wsgate sets once).
pub(super) fn encode_switch(headers: &HeaderMap, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    let mut dated = false;
    for (name, value) in headers {
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `date` value of the current second, as hyper caches its own.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the IMF-fixdate of now (RFC 9110 §5.6.7), formatted once per second.
pub(crate) fn http_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *at = secs;
            } else {
                // Only a year past 9999 is longer: written, never cached.
                out.extend_from_slice(formatted.as_bytes());
                return;
            }
        }
        out.extend_from_slice(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn the_101_is_written_as_hyper_writes_it() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::DATE, HeaderValue::from_static("then"));
        let mut out = Vec::new();
        encode_switch(&h, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
              date: then\r\n\r\n"
        );
        h.remove(header::DATE);
        out.clear();
        encode_switch(&h, &mut out);
        let text = String::from_utf8(out).expect("ASCII");
        let date = text.split("date: ").nth(1).expect("a date line");
        assert_eq!(date.len(), 29 + 4, "{text:?}");
        assert!(date.ends_with(" GMT\r\n\r\n"), "{text:?}");
    }
}
