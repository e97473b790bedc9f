//! Commands from the admin API, carried out by the connection's own task: a close with a
//! chosen code, and messages pushed to a peer between the messages it is being relayed;
//! and the endings (shutdown, retirement) raised on the connection's entry.
//!
//! The task looks at its mailbox with one atomic load per round; the mailbox's waker is
//! handed over only when the task's waker changes (a pointer comparison otherwise), and it
//! is woken only when a command arrives. No boxed future is polled for it.

use std::task::Context;

use super::Relay;
use super::closing::Side;
use crate::shared::registry::{Command, MAX_QUEUED, Taken};
use crate::shared::report::Outcome;

impl Relay {
    /// Hands the mailbox this task's waker, when it is not the one it has; true when it
    /// did (the waker is new).
    pub(super) fn watch_mail(&mut self, cx: &mut Context<'_>) -> bool {
        if self
            .mail_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return false;
        }
        self.conn.register(cx.waker());
        self.mail_waker = Some(cx.waker().clone());
        true
    }

    /// Carries out what waits in the mailbox and can go now; true when anything did. A
    /// message waits while a fragmented message toward its peer is in flight, and the ones
    /// behind it wait with it, so pushes keep their order.
    pub(super) fn poll_mail(&mut self) -> bool {
        if !self.conn.has_mail() {
            return false;
        }
        let mut acted = self.act_on_endings();
        if !self.conn.has_commands() {
            return acted;
        }
        // Bounded: the mailbox holds a close and at most MAX_QUEUED commands.
        for _ in 0..=MAX_QUEUED {
            let hops = &self.hops;
            let taken = self.conn.take(|command| match command {
                Command::Send { to_backend, .. } => {
                    let hop = &hops[if *to_backend {
                        Side::Backend
                    } else {
                        Side::Client
                    } as usize];
                    // After its Close nothing more goes to the peer: take it to drop it.
                    hop.close_sent() || hop.between_messages()
                }
            });
            let Some(taken) = taken else {
                break;
            };
            acted = true;
            match taken {
                Taken::Close(code, reason) => {
                    tracing::info!(conn = self.conn.id, code, "closed through the admin API");
                    self.initiate(code, &reason, Outcome::Admin);
                }
                Taken::Command(Command::Send {
                    to_backend,
                    binary,
                    payload,
                }) => {
                    let side = if to_backend {
                        Side::Backend
                    } else {
                        Side::Client
                    };
                    self.hop(side).queue_message(binary, &payload);
                }
            }
        }
        acted
    }
}
