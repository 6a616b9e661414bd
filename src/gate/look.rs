//! Looking at what a waiting connection sent: is its head complete (then it
//! is queued for a worker), has its PROXY header arrived (then it goes back
//! to the supervisor), or is a lingering connection done?

use super::*;

impl Gate {
    /// New bytes (or an end) on a waiting connection: is its head complete?
    pub(super) fn look(&mut self, slot: u32, ev: EpollFlags) {
        if self.held(slot).meta.kind == Kind::Proxy {
            return self.look_proxy(slot, ev);
        }
        let limit = self.limits.max_header_bytes.min(self.peek.len());
        let bounds = head::Bounds {
            max_header_bytes: self.limits.max_header_bytes,
            max_line_bytes: self.limits.max_line_bytes,
        };
        let seen = self.held(slot).seen;
        let (n, complete) = match crate::sys::peek(raw(self.held(slot)), &mut self.peek[..limit]) {
            Ok([]) => return self.close(slot), // closed before a complete head: nothing to answer
            Ok(bytes) => (bytes.len(), head::complete(bytes, seen, bounds)),
            Err(Errno::EAGAIN) if !hung_up(ev) => return,
            Err(_) => return self.close(slot),
        };
        if complete {
            return self.queue(slot);
        }
        if hung_up(ev) {
            // The client stopped sending with its head incomplete.
            return self.close(slot);
        }
        if seen == 0 && self.held(slot).meta.kind == Kind::Parked {
            // The next request has begun: it has header_timeout to arrive.
            self.set_deadline(slot, Instant::now() + self.limits.header_timeout);
        }
        self.held_mut(slot).seen = n;
        if seen == 0 {
            self.room
                .entered(slot, self.gens[slot as usize], self.class_of(slot));
        }
    }

    /// A complete head: into its source's queue, until the supervisor asks
    /// for it; or, while handing over, back to the supervisor at once.
    pub(super) fn queue(&mut self, slot: u32) {
        if self.handing_over {
            return self.send_back(slot);
        }
        let gen = self.gens[slot as usize];
        let h = self.held_mut(slot);
        h.state = State::Queued;
        let (key, kind) = (h.key, h.meta.kind);
        self.set_deadline(slot, Instant::now() + self.limits.queue_timeout);
        self.queues.push(key, slot, gen);
        self.out.note(key, kind, Note::Queued);
    }

    /// Bytes on a connection whose PROXY header has not fully arrived: when
    /// it has, read it off the socket, make its source the peer, and hand
    /// the connection back as `Kind::Proxied`, for the supervisor to admit
    /// under the client's address. A bad header, or an end after part of
    /// one, closes it as refused.
    fn look_proxy(&mut self, slot: u32, ev: EpollFlags) {
        use lbaws::proto::proxy::{self, Parsed};
        let fd = raw(self.held(slot));
        let room = self.peek.len().min(proxy::MAX_HEADER);
        let buf = &mut self.peek[..room];
        let parsed = match crate::sys::peek(fd, buf) {
            Ok([]) => return self.close(slot), // a balancer's TCP check: connect, close
            Ok(bytes) => proxy::parse(bytes),
            Err(Errno::EAGAIN) if !hung_up(ev) => return,
            Err(_) => return self.close(slot),
        };
        match parsed {
            Ok(Parsed::Incomplete) if !hung_up(ev) => {}
            Ok(Parsed::Incomplete) | Err(_) => self.close_as(slot, Note::ProxyRefused),
            Ok(Parsed::Done { consumed, source }) => {
                match crate::sys::discard(fd, &mut buf[..consumed]) {
                    Ok(got) if got == consumed => {}
                    _ => return self.close_as(slot, Note::ProxyRefused),
                }
                let h = self.held_mut(slot);
                if let Some(a) = source {
                    h.meta.peer = crate::listen::Peer::Inet(a);
                }
                h.meta.kind = Kind::Proxied;
                self.send_back(slot);
            }
        }
    }

    /// Read and drop what a lingering connection sends; close at its end.
    pub(super) fn drain(&mut self, slot: u32) {
        let fd = raw(self.held(slot));
        loop {
            match crate::sys::discard(fd, &mut self.peek) {
                Ok(0) => return self.close(slot),
                Ok(n) => {
                    let h = self.held_mut(slot);
                    h.drained += n;
                    if h.drained > LINGER_BYTES {
                        return self.close(slot);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(_) => return self.close(slot),
            }
        }
    }
}
