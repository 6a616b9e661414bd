//! The gate's side of its channel to the supervisor: complete connections
//! handed over, oldest first, while there is room, and the tally of those
//! it closed.

use super::*;

impl Gate {
    /// Hand over complete connections, oldest first, while there is room.
    pub(super) fn send_ready(&mut self) {
        while let Some(&(slot, gen)) = self.queue.front() {
            if !self.is_live(slot, gen) {
                self.queue.pop_front();
                continue;
            }
            let h = self.slots[slot as usize].as_ref().expect("live");
            let n = handoff::encode(&Msg::Ready(h.meta), &mut self.msg);
            match crate::sys::send_with_fd(
                self.ready.as_fd(),
                &self.msg[..n],
                Some(h.fd.as_raw_fd()),
            ) {
                Ok(()) => {
                    self.queue.pop_front();
                    let h = self.slots[slot as usize].take().expect("live");
                    self.forget(&h.fd);
                    drop(h.fd); // the supervisor has its own copy now
                    self.release(slot);
                }
                // Full: the supervisor is at max_connections; it reads again
                // as workers end (EPOLLOUT wakes us).
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    crate::error!("gate: handing a connection to the supervisor: {e}");
                    self.queue.pop_front();
                    self.close(slot);
                }
            }
        }
    }

    pub(super) fn note_closed(&mut self, key: u128, kind: Kind) {
        self.unreported.push_back((key, kind, false));
    }

    /// Tell the supervisor which connections ended here (its per-source
    /// counts and its tally of what the gate holds depend on it).
    pub(super) fn report_closed(&mut self) {
        while !self.unreported.is_empty() || !self.closed.is_empty() {
            while !self.closed.is_full() {
                match self.unreported.pop_front() {
                    Some((k, kind, refused)) => self.closed.push(k, kind, refused),
                    None => break,
                }
            }
            match crate::sys::send_with_fd(self.ctl.as_fd(), self.closed.bytes(), None) {
                Ok(()) => self.closed.clear(),
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.closed.clear();
                    self.unreported.clear();
                }
            }
        }
        let want_out = !self.closed.is_empty();
        if want_out != self.ctl_wants_out {
            let mut flags = EpollFlags::EPOLLIN;
            if want_out {
                flags |= EpollFlags::EPOLLOUT;
            }
            let _ = self
                .epoll
                .modify(&self.ctl, &mut EpollEvent::new(flags, CTL));
            self.ctl_wants_out = want_out;
        }
    }
}
