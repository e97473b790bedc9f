//! Room for the frames too large for a connection's small buffer, granted by the owner of
//! the frame decoder from a budget it shares with other connections.

use std::task::{Context, Poll};

/// Grants a frame decoder the room a large frame needs before it reads more of it.
///
/// The decoder asks for the whole room it needs at once (what it holds already counts)
/// and gives all of it back between frames, once what it read was written on.
pub trait Room {
    /// Ready once `bytes` of room are granted in all; pending (with `cx` woken when room
    /// comes back) while the budget has none to spare, and nothing more is read meanwhile.
    fn poll_grant(&mut self, bytes: usize, cx: &mut Context<'_>) -> Poll<()>;
    /// The decoder gives back all the room it was granted.
    fn release(&mut self);
}

/// Room without a budget: every request is granted at once (the codec's own tests).
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Unbounded;

#[cfg(test)]
impl Room for Unbounded {
    fn poll_grant(&mut self, _bytes: usize, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    fn release(&mut self) {}
}
