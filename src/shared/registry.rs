//! The registry of live relayed connections, for the admin API: who is connected, what
//! each one moved, and a mailbox through which a command reaches the connection's own task
//! (and through which shutdown and retirement reach it: [`Ending`]).
//!
//! The frame path takes no lock here: a connection's counters are atomics that only its
//! own task writes (Relaxed loads and stores, plain moves on x86), and its task looks at
//! the mailbox with one atomic load per wake; the mailbox's lock is taken only when a
//! command is there. The map itself is locked only when a connection opens or closes and
//! while the API copies a bounded page out of one shard, so listing 100,000 connections
//! never holds a lock across the whole list.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::shared::client::ClientProtocol;
use crate::shared::pool::Backend;
use crate::shared::routes::Route;

/// Shards of the map: connections open and close on every worker at once, and each
/// takes one shard's lock for a moment (one B-tree insert or removal); 16 keep workers
/// apart, and each shard's partly filled tree nodes cost the idle connections little.
const SHARDS: usize = 16;
/// Commands one connection may have waiting: pushes beyond it are refused (the API
/// answers 503) instead of queueing without bound for a connection that does not drain.
pub const MAX_QUEUED: usize = 64;

/// Entries looked at under one shard lock while a page is built.
const CHUNK: usize = 256;

/// Indexes of the counters of [`Conn`].
const MSGS_IN: usize = 0;
const BYTES_IN: usize = 1;
const MSGS_OUT: usize = 2;
const BYTES_OUT: usize = 3;

/// What the admin API asks of a connection; carried out by the connection's own task.
#[derive(Debug)]
pub enum Command {
    /// Send a data message (`binary` or text) to the client, or to the backend.
    Send {
        /// Toward the backend instead of the client.
        to_backend: bool,
        /// Binary rather than text.
        binary: bool,
        /// The whole message.
        payload: Bytes,
    },
}

/// What ends a connection from outside it, raised on its entry and acted on by its own
/// task: one flag in the word its task already reads for mail, instead of a wait of its
/// own per cause (three boxed cancellation waits cost an idle connection ~290 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Ending {
    /// The proxy is shutting down.
    Shutdown = 1 << 1,
    /// The connection's route may have been retired (the task checks its own group).
    RouteRetired = 1 << 2,
    /// The connection's backend may have been retired (likewise).
    BackendRetired = 1 << 3,
}

/// Commands (or a close) wait in the inbox.
const COMMANDS: u8 = 1;

/// The [`Ending`]s raised on a connection since its task last looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Endings(u8);

impl Endings {
    /// Whether `ending` is among them.
    pub fn has(self, ending: Ending) -> bool {
        self.0 & ending as u8 != 0
    }
}

/// Why a command was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The connection is closing (or closed): nothing more is sent on it.
    #[error("the connection is closing")]
    Closing,
    /// The connection has [`MAX_QUEUED`] commands waiting already.
    #[error("the connection has too many messages waiting")]
    Full,
}

/// Who to wake for a connection's mail, and the mail. Allocated by the first command
/// only, so an idle connection pays one pointer for it (inline, an empty queue and close
/// would cost 56 bytes on every connection; boxed apart, 16).
#[derive(Debug, Default)]
struct Inbox {
    waker: Option<Waker>,
    mail: Option<Box<Mail>>,
}

/// What waits in a connection's mailbox.
#[derive(Debug, Default)]
struct Mail {
    /// A close asked for: goes before any queued message (a Close may be sent inside a
    /// fragmented message, data may not).
    close: Option<(u16, String)>,
    queue: VecDeque<Command>,
}

/// One live connection as the admin API sees it.
#[derive(Debug)]
pub struct Conn {
    /// Connection id (as in its logs and close report).
    pub id: u64,
    /// The route it matched.
    pub route: Arc<Route>,
    /// Backend URL (or `echo`).
    pub backend: Box<str>,
    /// Client socket address.
    pub client_addr: SocketAddr,
    /// Whether the client hop is TLS.
    pub tls: bool,
    /// The client hop's HTTP version.
    pub protocol: ClientProtocol,
    /// Who the door let in, when it knows.
    pub identity: Option<Box<str>>,
    /// When the relay started.
    pub started: Instant,
    /// Messages and payload bytes: client to backend, then backend to client.
    counts: [AtomicU64; 4],
    /// The last keepalive round trip per hop (client, backend), in microseconds; 0 = none yet.
    rtt_us: [AtomicU32; 2],
    /// The connection started to close: no more commands.
    closing: AtomicBool,
    /// [`COMMANDS`] when something waits in the inbox, and the [`Ending`]s raised.
    mail: AtomicU8,
    inbox: Mutex<Inbox>,
}

/// A connection's counters and round trips as read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Messages client to backend.
    pub msgs_in: u64,
    /// Payload bytes client to backend.
    pub bytes_in: u64,
    /// Messages backend to client.
    pub msgs_out: u64,
    /// Payload bytes backend to client.
    pub bytes_out: u64,
    /// Last keepalive round trip to the client, in microseconds (0 = none yet).
    pub rtt_client_us: u32,
    /// Last keepalive round trip to the backend, in microseconds (0 = none yet).
    pub rtt_backend_us: u32,
}

impl Conn {
    /// A connection not yet in any registry.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        route: Arc<Route>,
        backend: Box<str>,
        client_addr: SocketAddr,
        tls: bool,
        protocol: ClientProtocol,
        identity: Option<Box<str>>,
        started: Instant,
    ) -> Conn {
        Conn {
            id,
            route,
            backend,
            client_addr,
            tls,
            protocol,
            identity,
            started,
            counts: Default::default(),
            rtt_us: Default::default(),
            closing: AtomicBool::new(false),
            mail: AtomicU8::new(0),
            inbox: Mutex::new(Inbox::default()),
        }
    }

    /// Adds a data frame's payload to direction `dir` (0: client to backend), and a
    /// message when it ends one. Only the connection's own task calls it, so a load and a
    /// store suffice (no read-modify-write).
    #[inline]
    pub fn count(&self, dir: usize, bytes: u64, ends_message: bool) {
        let base = dir * 2;
        let b = &self.counts[base + 1];
        b.store(b.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
        if ends_message {
            let m = &self.counts[base];
            m.store(m.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    /// Messages and payload bytes per direction (client to backend first).
    pub fn totals(&self) -> [(u64, u64); 2] {
        let c = |i: usize| self.counts[i].load(Ordering::Relaxed);
        [(c(MSGS_IN), c(BYTES_IN)), (c(MSGS_OUT), c(BYTES_OUT))]
    }

    /// Records a keepalive round trip on `hop` (0: client, 1: backend).
    pub fn set_rtt(&self, hop: usize, rtt: std::time::Duration) {
        let us = rtt.as_micros().clamp(1, u32::MAX as u128) as u32;
        self.rtt_us[hop].store(us, Ordering::Relaxed);
    }

    /// The counters and round trips now.
    pub fn counts(&self) -> Counts {
        let [(msgs_in, bytes_in), (msgs_out, bytes_out)] = self.totals();
        Counts {
            msgs_in,
            bytes_in,
            msgs_out,
            bytes_out,
            rtt_client_us: self.rtt_us[0].load(Ordering::Relaxed),
            rtt_backend_us: self.rtt_us[1].load(Ordering::Relaxed),
        }
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The connection started to close (its own task says so): commands are refused.
    pub fn set_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // A poisoned lock only means a panic elsewhere while it was held; the inbox is
        // still a valid value.
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks mail (`flag`) and wakes the task, after the inbox lock is released.
    fn deliver(&self, inbox: MutexGuard<'_, Inbox>, flag: u8) {
        self.mail.fetch_or(flag, Ordering::AcqRel);
        let waker = inbox.waker.clone();
        drop(inbox);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Queues a command for the connection's task.
    pub fn post(&self, command: Command) -> Result<(), PostError> {
        let mut inbox = self.inbox();
        if self.is_closing() || inbox.mail.as_ref().is_some_and(|m| m.close.is_some()) {
            return Err(PostError::Closing);
        }
        let mail = inbox.mail.get_or_insert_with(Default::default);
        if mail.queue.len() >= MAX_QUEUED {
            return Err(PostError::Full);
        }
        mail.queue.push_back(command);
        self.deliver(inbox, COMMANDS);
        Ok(())
    }

    /// Asks the connection's task to close both hops with `code` and `reason`; refused
    /// when it is closing already.
    pub fn close(&self, code: u16, reason: String) -> Result<(), PostError> {
        let mut inbox = self.inbox();
        if self.is_closing() || inbox.mail.as_ref().is_some_and(|m| m.close.is_some()) {
            return Err(PostError::Closing);
        }
        inbox.mail.get_or_insert_with(Default::default).close = Some((code, reason));
        self.deliver(inbox, COMMANDS);
        Ok(())
    }

    /// Tells the connection's task that `ending` happened (again is harmless: the task
    /// acts on each kind once).
    pub fn raise(&self, ending: Ending) {
        self.deliver(self.inbox(), ending as u8);
    }

    /// For the connection's task: whether anything waits (one atomic load).
    #[inline]
    pub fn has_mail(&self) -> bool {
        self.mail.load(Ordering::Acquire) != 0
    }

    /// For the connection's task: whether commands (or a close) wait.
    #[inline]
    pub fn has_commands(&self) -> bool {
        self.mail.load(Ordering::Acquire) & COMMANDS != 0
    }

    /// For the connection's task: the endings raised since it last looked, taken.
    pub fn take_endings(&self) -> Endings {
        if self.mail.load(Ordering::Acquire) & !COMMANDS == 0 {
            return Endings::default();
        }
        Endings(self.mail.fetch_and(COMMANDS, Ordering::AcqRel) & !COMMANDS)
    }

    /// For the connection's task: the waker to wake when mail comes (set when it changes).
    pub fn register(&self, waker: &Waker) {
        self.inbox().waker = Some(waker.clone());
    }

    /// For the connection's task: takes the close asked for, if any, then the first
    /// queued command for which `ready` says yes (a message waits while a fragmented
    /// message is in flight on its hop). The mail flag stays up while anything is left.
    pub fn take(&self, ready: impl Fn(&Command) -> bool) -> Option<Taken> {
        let mut inbox = self.inbox();
        let mail = inbox.mail.as_mut()?;
        let taken = if let Some((code, reason)) = mail.close.take() {
            Some(Taken::Close(code, reason))
        } else {
            match mail.queue.front() {
                Some(first) if ready(first) => mail.queue.pop_front().map(Taken::Command),
                _ => None,
            }
        };
        if mail.queue.is_empty() {
            inbox.mail = None;
            self.mail.fetch_and(!COMMANDS, Ordering::AcqRel);
        }
        taken
    }
}

/// What [`Conn::take`] handed to the task.
#[derive(Debug)]
pub enum Taken {
    /// Close both hops with this code and reason.
    Close(u16, String),
    /// Carry out this command.
    Command(Command),
}

/// Where a page of [`Registry::page`] starts: shard and the last id seen in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The shard to continue in.
    pub shard: usize,
    /// Ids above this one in that shard come next.
    pub after: Option<u64>,
}

impl Cursor {
    /// The cursor as the API hands it out: `shard.id`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.shard, self.after.map_or(0, |a| a + 1))
    }

    /// Reads a cursor made by [`Cursor::encode`].
    pub fn decode(text: &str) -> Option<Cursor> {
        let (shard, next) = text.split_once('.')?;
        let shard: usize = shard.parse().ok()?;
        let next: u64 = next.parse().ok()?;
        (shard < SHARDS).then_some(Cursor {
            shard,
            after: next.checked_sub(1),
        })
    }
}

/// One shard of the registry: its connections by id.
type Shard = Mutex<BTreeMap<u64, Arc<Conn>>>;

/// Opened connections an event stream may lag behind before it misses some.
const OPEN_BACKLOG: usize = 1024;

/// The live connections of a proxy.
#[derive(Debug)]
pub struct Registry {
    shards: Box<[Shard]>,
    /// Connections that opened, for event streams (sent only while one watches: a
    /// broadcast send takes a lock every worker would share).
    opens: tokio::sync::broadcast::Sender<Arc<Conn>>,
    watchers: AtomicU32,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            opens: tokio::sync::broadcast::channel(OPEN_BACKLOG).0,
            watchers: AtomicU32::new(0),
        }
    }
}

impl Registry {
    fn shard(&self, index: usize) -> MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        // Poisoning means a panic while the map was held; the map itself is intact.
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shard_of(id: u64) -> usize {
        (id % SHARDS as u64) as usize
    }

    /// Lists a connection that started relaying (and tells event streams, if any watch).
    pub fn insert(&self, conn: Arc<Conn>) {
        if self.watchers.load(Ordering::Acquire) > 0 {
            let _ = self.opens.send(conn.clone());
        }
        self.shard(Self::shard_of(conn.id)).insert(conn.id, conn);
    }

    /// Subscribes to connections opening from now on; [`Registry::unwatch_opens`] once
    /// the receiver is dropped.
    pub fn watch_opens(&self) -> tokio::sync::broadcast::Receiver<Arc<Conn>> {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        self.opens.subscribe()
    }

    /// One subscriber of [`Registry::watch_opens`] left.
    pub fn unwatch_opens(&self) {
        self.watchers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Forgets a connection that ended.
    pub fn remove(&self, id: u64) {
        let gone = self.shard(Self::shard_of(id)).remove(&id);
        // Dropped outside the lock.
        drop(gone);
    }

    /// The connection with this id, while it lives.
    pub fn get(&self, id: u64) -> Option<Arc<Conn>> {
        self.shard(Self::shard_of(id)).get(&id).cloned()
    }

    /// Up to `limit` connections that `keep` accepts, from `cursor` on, and the cursor of
    /// the next page (none after the last). At most `scan` entries are looked at in all,
    /// and a shard's lock is held for at most [`CHUNK`] of them at a time, so a large
    /// registry never holds a relay thread that opens or closes a connection.
    pub fn page(
        &self,
        cursor: Cursor,
        limit: usize,
        scan: usize,
        keep: impl Fn(&Conn) -> bool,
    ) -> (Vec<Arc<Conn>>, Option<Cursor>) {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut out = Vec::new();
        let mut at = cursor;
        let mut budget = scan;
        while at.shard < SHARDS {
            let lower = at.after.map_or(Unbounded, Excluded);
            let (mut looked, mut more) = (0, false);
            {
                let shard = self.shard(at.shard);
                for (id, conn) in shard.range((lower, Unbounded)) {
                    if out.len() >= limit || looked >= CHUNK || budget == 0 {
                        more = true;
                        break;
                    }
                    looked += 1;
                    budget -= 1;
                    at.after = Some(*id);
                    if keep(conn) {
                        out.push(conn.clone());
                    }
                }
            }
            if more {
                if out.len() >= limit || budget == 0 {
                    return (out, Some(at));
                }
                // Only the chunk ended: the lock was let go; go on in the same shard.
                continue;
            }
            at = Cursor {
                shard: at.shard + 1,
                after: None,
            };
        }
        (out, None)
    }

    /// Every connection `keep` accepts (one shard locked at a time).
    pub fn all(&self, keep: impl Fn(&Conn) -> bool) -> Vec<Arc<Conn>> {
        let mut out = Vec::new();
        for i in 0..SHARDS {
            out.extend(self.shard(i).values().filter(|c| keep(c)).cloned());
        }
        out
    }

    /// Raises `ending` on every connection `keep` accepts. The matches are collected under
    /// each shard's lock and woken after it is released: a wake-up may be a system call,
    /// and connections opening and closing wait for that lock.
    pub fn raise(&self, ending: Ending, keep: impl Fn(&Conn) -> bool) -> usize {
        let mut raised = 0;
        let mut batch = Vec::new();
        for i in 0..SHARDS {
            batch.extend(self.shard(i).values().filter(|c| keep(c)).cloned());
            raised += batch.len();
            for conn in batch.drain(..) {
                conn.raise(ending);
            }
        }
        raised
    }

    /// Closes the route's connections open now with 1012 over `window` (`why`: the Close
    /// reason, else "route reloaded"). Marked first, then told: a connection that took its
    /// watch before the mark and is listed only after this search sees the mark itself
    /// when it is listed (the relay looks once it is in the registry).
    pub fn retire_route(&self, route: &Arc<Route>, window: Duration, why: Option<&'static str>) {
        route.retirement.retire(route.active(), window, why);
        self.raise(Ending::RouteRetired, |c| Arc::ptr_eq(&c.route, route));
    }

    /// Closes the backend's connections open now with 1012 over `window`, like
    /// [`Registry::retire_route`]. Entries are found by the backend's name; one of the
    /// same name in another route is told too and finds its own group not retired.
    pub fn retire_backend(&self, backend: &Backend, window: Duration, why: Option<&'static str>) {
        backend.retirement.retire(backend.active(), window, why);
        self.raise(Ending::BackendRetired, |c| *c.backend == *backend.name);
    }

    /// Live connections listed.
    pub fn count(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one `Arc<Conn>`: with its two counts it fits
    /// mimalloc's 192-byte bin only while the entry is at most 176 bytes (the next bin is 224).
    #[test]
    fn an_entry_fits_its_allocator_bin() {
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 176, "Conn is {size} bytes");
    }

    fn conn(id: u64, route: &Arc<Route>) -> Arc<Conn> {
        Arc::new(Conn::new(
            id,
            route.clone(),
            "echo".into(),
            "127.0.0.1:1".parse().unwrap(),
            false,
            ClientProtocol::H1,
            None,
            Instant::now(),
        ))
    }

    fn route() -> Arc<Route> {
        crate::shared::routes::test_route("{name: echo, path: /echo, echo: true}")
    }

    /// An idle connection's entry stays small. The budget is 200 bytes per connection;
    /// the entry is 200 with its reference counts, its map slot about 30 more, and the
    /// facts moved out of the relay into it (about 90 bytes) bring the measured cost of
    /// an idle connection to +139 B (`tests/memory.rs`). Growing the entry spends that.
    #[test]
    fn an_entry_stays_small() {
        let entry = std::mem::size_of::<Conn>() + 2 * std::mem::size_of::<usize>();
        assert!(entry <= 200, "a registry entry takes {entry} bytes");
    }

    /// Pages of any size, with scans of any budget, cover every entry exactly once.
    #[test]
    fn pages_cover_every_connection_once() {
        let r = route();
        let registry = Registry::default();
        for id in 1..=5_000 {
            registry.insert(conn(id, &r));
        }
        for (limit, scan) in [(1000, 20_000), (7, 20_000), (100, 50), (3, 1)] {
            let mut seen = Vec::new();
            let mut cursor = Cursor::default();
            for _ in 0..100_000 {
                let (page, next) = registry.page(cursor, limit, scan, |c| c.id % 2 == 0);
                assert!(page.len() <= limit);
                seen.extend(page.iter().map(|c| c.id));
                match next {
                    Some(n) => cursor = Cursor::decode(&n.encode()).unwrap(),
                    None => break,
                }
            }
            seen.sort();
            let want: Vec<u64> = (1..=5_000).filter(|i| i % 2 == 0).collect();
            assert_eq!(seen, want, "limit {limit} scan {scan}");
        }
    }

    /// What the registry costs per connection, for `benches/registry.sh` (which runs it
    /// under callgrind, one phase counted at a time with `--toggle-collect`): entries
    /// made as a relay makes its own (the `Arc<Conn>` is the registry's allocation), then
    /// inserted, walked in pages of 1,000 as `GET /api/connections` does (JSON aside),
    /// and removed (and freed) as relays end. `REGISTRY_COST_N` entries (default 20,000);
    /// prints the RSS the listed entries add, per entry.
    #[test]
    #[ignore]
    fn registry_cost() {
        let n: u64 = std::env::var("REGISTRY_COST_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let r = route();
        let registry = Registry::default();
        let rss_before = rss_bytes();
        let made = registry_cost_make(&r, n);
        // The list of made entries is freed inside (a block of its own, returned to the
        // system), so the RSS below is the entries' and the map's.
        registry_cost_insert(&registry, made);
        let rss_after = rss_bytes();
        let listed = registry_cost_list(&registry);
        assert_eq!(listed, n as usize);
        registry_cost_close(&registry, n);
        assert_eq!(registry.count(), 0);
        println!(
            "RESULT entries={n} entry_bytes={} rss_bytes_per_entry={:.0}",
            std::mem::size_of::<Conn>() + 2 * std::mem::size_of::<usize>(),
            rss_after.saturating_sub(rss_before) as f64 / n as f64
        );
    }

    #[inline(never)]
    fn registry_cost_make(r: &Arc<Route>, n: u64) -> Vec<Arc<Conn>> {
        // Parsed once (a literal, so it cannot fail): a relay has its peer's address
        // already, and parsing it per entry would be a third of what this phase counts.
        let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
        (0..n)
            .map(|id| {
                Arc::new(Conn::new(
                    id,
                    r.clone(),
                    "echo".into(),
                    client,
                    false,
                    ClientProtocol::H1,
                    None,
                    Instant::now(),
                ))
            })
            .collect()
    }

    #[inline(never)]
    fn registry_cost_insert(registry: &Registry, made: Vec<Arc<Conn>>) {
        for c in made {
            registry.insert(c);
        }
    }

    #[inline(never)]
    fn registry_cost_list(registry: &Registry) -> usize {
        let (mut cursor, mut listed) = (Some(Cursor::default()), 0);
        while let Some(at) = cursor {
            let (page, next) = registry.page(at, 1000, 20_000, |_| true);
            listed += page.len();
            cursor = next;
        }
        listed
    }

    #[inline(never)]
    fn registry_cost_close(registry: &Registry, n: u64) {
        for id in 0..n {
            registry.remove(id);
        }
    }

    /// Resident bytes of this process (Linux: /proc/self/statm, in pages); 0 elsewhere.
    fn rss_bytes() -> u64 {
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * 4096)
    }

    /// A command waits while `ready` says no, a close goes first, and the mail flag
    /// follows what is left.
    #[test]
    fn the_mailbox_keeps_order_and_puts_a_close_first() {
        let c = conn(1, &route());
        let send = |n: u8| Command::Send {
            to_backend: false,
            binary: true,
            payload: Bytes::from(vec![n]),
        };
        c.post(send(1)).unwrap();
        c.post(send(2)).unwrap();
        assert!(c.has_mail());
        assert!(c.take(|_| false).is_none());
        assert!(c.has_mail());
        c.close(4000, "bye".into()).unwrap();
        assert!(matches!(c.take(|_| true), Some(Taken::Close(4000, _))));
        assert_eq!(c.post(send(3)), Ok(()));
        let payload = |t: Option<Taken>| match t {
            Some(Taken::Command(Command::Send { payload, .. })) => payload[0],
            other => panic!("{other:?}"),
        };
        assert_eq!(payload(c.take(|_| true)), 1);
        assert_eq!(payload(c.take(|_| true)), 2);
        assert_eq!(payload(c.take(|_| true)), 3);
        assert!(!c.has_mail());
        c.set_closing();
        assert_eq!(c.post(send(4)), Err(PostError::Closing));
    }

    /// An ending raised on an entry is taken once, beside commands and without touching
    /// them; the registry raises it only where asked.
    #[test]
    fn endings_are_taken_once_and_leave_commands_alone() {
        let r = route();
        let registry = Registry::default();
        let (a, b) = (conn(1, &r), conn(2, &r));
        registry.insert(a.clone());
        registry.insert(b.clone());
        assert_eq!(registry.raise(Ending::Shutdown, |c| c.id == 1), 1);
        assert!(a.has_mail() && !a.has_commands());
        assert!(!b.has_mail(), "only where asked");
        let taken = a.take_endings();
        assert!(taken.has(Ending::Shutdown) && !taken.has(Ending::RouteRetired));
        assert_eq!(a.take_endings(), Endings::default(), "taken once");
        assert!(!a.has_mail());

        a.post(Command::Send {
            to_backend: true,
            binary: false,
            payload: Bytes::from_static(b"x"),
        })
        .unwrap();
        a.raise(Ending::RouteRetired);
        a.raise(Ending::BackendRetired);
        assert!(matches!(a.take(|_| true), Some(Taken::Command(_))));
        assert!(
            a.has_mail() && !a.has_commands(),
            "the endings outlive the queue"
        );
        let taken = a.take_endings();
        assert!(taken.has(Ending::RouteRetired) && taken.has(Ending::BackendRetired));
        assert!(!a.has_mail());
    }
}
