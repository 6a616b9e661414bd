//! The gate's end of its link to the supervisor (`handoff` describes the
//! messages): what it is told, and what it tells, in order.
//!
//! Everything the gate sends goes through one queue, `Outgoing`, and leaves
//! in the order it was made: the supervisor's accounting depends on it
//! (the `Adopted`/`Lost` notes answer its `Adopt`s one for one and in
//! order; a `Send` is answered by the connection or by a note). When the
//! link is full the queue waits for `EPOLLOUT`; nothing is ever dropped
//! while the supervisor is there to read it.

use super::*;
use crate::handoff::{Msg, NoteBatch, NoteEntry};
use std::collections::VecDeque;
use std::os::fd::AsFd;

enum Out {
    Note(NoteEntry),
    /// A connection to send (if it is still there when its turn comes).
    Conn {
        slot: u32,
        gen: u32,
        answer: bool,
    },
}

#[derive(Default)]
pub(super) struct Outgoing {
    items: VecDeque<Out>,
    batch: NoteBatch,
    /// `EPOLLOUT` is asked for on the link.
    waiting: bool,
}

impl Outgoing {
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(super) fn note(&mut self, key: u128, kind: Kind, note: Note) {
        self.items
            .push_back(Out::Note(NoteEntry { key, kind, note }));
    }
}

impl Gate {
    /// Take every message waiting on the link; false at end of stream (the
    /// supervisor is gone).
    pub(super) fn read_supervisor(&mut self) -> bool {
        loop {
            let mut buf = [0u8; handoff::CONN_MSG];
            let (n, [fd, file, file2]) =
                match crate::sys::recv_with_fds(self.link.as_fd(), &mut buf) {
                    Ok((0, _)) => return false,
                    Ok(r) => r,
                    Err(Errno::EAGAIN) => return true,
                    Err(Errno::EMSGSIZE) => {
                        crate::error!("gate: a message from the supervisor was cut short");
                        continue;
                    }
                    Err(e) => {
                        crate::error!("gate: receiving from the supervisor: {e}");
                        return false;
                    }
                };
            match (handoff::decode(&buf[..n]), fd) {
                (Some(Msg::Adopt { meta, body }), Some(fd)) if body.is_none() || file.is_some() => {
                    self.out
                        .note(handoff::meta_key(&meta), meta.kind, Note::Adopted);
                    self.hold(fd, meta, file.zip(body), file2);
                }
                (Some(Msg::Adopt { meta, .. }), _) => {
                    // Its descriptor could not be installed (no room in our
                    // table): the supervisor still has it, and answers it.
                    crate::warn!(
                        "gate: a connection from {} could not be taken (descriptor limit?): handed back",
                        meta.peer
                    );
                    self.out
                        .note(handoff::meta_key(&meta), meta.kind, Note::Lost);
                }
                (Some(Msg::Send(key)), _) => self.send_one(key),
                (Some(Msg::Limits(l)), _) => self.set_limits(l),
                (Some(Msg::Logs(spec)), fd) => crate::log::adopt(spec, fd),
                (Some(Msg::SiteLog { index, count }), fd) => {
                    crate::log::adopt_site_file(index as usize, count as usize, fd)
                }
                (Some(Msg::TempDir), Some(dir)) => self.temp_dir = Some(std::rc::Rc::new(dir)),
                (Some(Msg::Stop), _) => self.stop(),
                (Some(Msg::Handover), _) => self.handover(),
                (other, _) => crate::error!("gate: unexpected message {other:?}"),
            }
        }
    }

    fn set_limits(&mut self, l: GateLimits) {
        if l.max_header_bytes != self.limits.max_header_bytes {
            self.peek = vec![MaybeUninit::uninit(); peek_room(&l)];
        }
        self.limits = l;
    }

    /// A worker is free for `key`: its oldest complete request goes, or
    /// the supervisor hears there is none.
    fn send_one(&mut self, key: u128) {
        let (slots, gens) = (&self.slots, &self.gens);
        match self.queues.pop(key, |s, g| is_queued(slots, gens, s, g)) {
            Some((slot, gen)) => {
                self.held_mut(slot).state = State::Sending;
                self.out.items.push_back(Out::Conn {
                    slot,
                    gen,
                    answer: true,
                });
            }
            None => self.out.note(key, Kind::New, Note::Empty),
        }
    }

    /// Send a connection back unasked (its PROXY header read; a hand-over).
    pub(super) fn send_back(&mut self, slot: u32) {
        self.held_mut(slot).state = State::Returning;
        let gen = self.gens[slot as usize];
        self.out.items.push_back(Out::Conn {
            slot,
            gen,
            answer: false,
        });
    }

    /// Send what is queued, in order, while the link takes it.
    pub(super) fn flush(&mut self) {
        loop {
            let sent = match self.out.items.front() {
                None => break,
                Some(Out::Note(_)) => self.send_notes(),
                Some(&Out::Conn { slot, gen, answer }) => self.send_conn(slot, gen, answer),
            };
            match sent {
                Ok(()) => {}
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    // The supervisor is gone (EPIPE) or the link broke: the
                    // next read sees the end.
                    crate::error!("gate: sending to the supervisor: {e}");
                    self.out.items.clear();
                    break;
                }
            }
        }
        let want = !self.out.items.is_empty();
        if want != self.out.waiting {
            let mut flags = EpollFlags::EPOLLIN;
            if want {
                flags |= EpollFlags::EPOLLOUT;
            }
            let _ = self
                .epoll
                .modify(&self.link, &mut EpollEvent::new(flags, LINK));
            self.out.waiting = want;
        }
    }

    /// The notes at the front of the queue, as one message.
    fn send_notes(&mut self) -> Result<(), Errno> {
        let out = &mut self.out;
        out.batch.clear();
        for item in &out.items {
            match item {
                Out::Note(e) if !out.batch.is_full() => out.batch.push(*e),
                _ => break,
            }
        }
        crate::sys::send_with_fd(self.link.as_fd(), out.batch.bytes(), None)?;
        for _ in 0..out.batch.len() {
            out.items.pop_front();
        }
        Ok(())
    }

    /// The connection at the front of the queue (gone already: skipped; its
    /// close was noted).
    fn send_conn(&mut self, slot: u32, gen: u32, answer: bool) -> Result<(), Errno> {
        let on_its_way = self.is_live(slot, gen)
            && matches!(self.held(slot).state, State::Sending | State::Returning);
        // (A tail handed back at an upgrade: its state was Tail; send_back
        // made it Returning.)
        if !on_its_way {
            self.out.items.pop_front();
            return Ok(());
        }
        let h = self.held(slot);
        let mut msg = [0u8; handoff::CONN_MSG];
        let (body, fds, k) = match (&h.req, &h.tail) {
            (Some(body::Req::Complete { file, spec }), _) => {
                (Some(*spec), [raw(h), file.as_raw_fd(), -1], 2)
            }
            (_, Some(t)) => {
                let (file, log, spec) = t.parts();
                (Some(spec), [raw(h), file.as_raw_fd(), log.as_raw_fd()], 3)
            }
            _ => (None, [raw(h), -1, -1], 1),
        };
        let ready = Msg::Ready {
            meta: h.meta,
            answer,
            body,
        };
        let n = handoff::encode(&ready, &mut msg);
        crate::sys::send_with_fds(self.link.as_fd(), &msg[..n], &fds[..k])?;
        self.out.items.pop_front();
        let h = self.slots[slot as usize].take().expect("live");
        self.forget(&h.fd);
        drop(h.fd); // the supervisor has its own copy now
        self.release(slot);
        Ok(())
    }
}
