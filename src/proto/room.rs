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

/// Room that refuses every other request, the first one too when `refuse_first` (as a
/// used-up budget does until room comes back, waking the waiter), and asserts that no
/// request is for more than `most` bytes and that nothing is given back that was not
/// granted: the stingy budget of the fuzz targets and the codec's tests.
#[derive(Debug)]
pub struct Alternating {
    refuse: bool,
    held: usize,
    most: usize,
}

impl Alternating {
    /// Refusing the first request when `refuse_first`; requests over `most` bytes panic.
    pub fn new(refuse_first: bool, most: usize) -> Alternating {
        Alternating {
            refuse: !refuse_first,
            held: 0,
            most,
        }
    }
}

impl Room for Alternating {
    fn poll_grant(&mut self, bytes: usize, cx: &mut Context<'_>) -> Poll<()> {
        assert!(bytes <= self.most, "asked for {bytes} bytes of room");
        self.refuse = !self.refuse;
        if self.refuse {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.held = bytes;
        Poll::Ready(())
    }

    fn release(&mut self) {
        assert!(self.held > 0, "room given back that was never granted");
        self.held = 0;
    }
}
