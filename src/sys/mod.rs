//! The raw system calls lbaws makes that `nix` does not wrap the way a hot
//! loop needs them: without allocating, on reused buffers, with the flags that
//! keep every descriptor close-on-exec (invariant 3). The `unsafe` they need
//! is kept here, each block with the reason it is sound.
//!
//! And every other `unsafe` of lbaws but the allocator's (`crate::alloc`),
//! behind safe functions whose docs say what they check and what they
//! trust their caller for: `fork`, `_exit` and the environment
//! (`process.rs`, safe because no lbaws process has a second thread), the
//! descriptors a process is handed (`fd.rs`: `adopt_fd`), signal
//! dispositions (`signal.rs`), the scoreboard's shared memory
//! (`shared.rs`), a peek's or a read's initialised bytes (here).
//!
//! Nothing here knows about HTTP or about lbaws's processes: descriptors,
//! bytes and addresses in, results out.

use nix::errno::Errno;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

mod fd;
mod process;
mod sandbox;
mod script;
pub mod shared;
mod signal;
pub use fd::*;
pub use process::*;
pub use sandbox::*;
pub use script::*;
pub use signal::*;

/// `accept4(SOCK_CLOEXEC)`: the connection and its peer's address (`None`
/// for a Unix socket's peer).
pub fn accept(listener: RawFd) -> Result<(OwnedFd, Option<SocketAddr>), Errno> {
    // SAFETY: a zeroed sockaddr_storage is a valid out-parameter of the
    // length given; accept4 writes at most that many bytes into it.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let fd = unsafe {
        libc::accept4(
            listener,
            &mut ss as *mut _ as *mut libc::sockaddr,
            &mut len,
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: accept4 just returned this descriptor to us.
    let conn = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((conn, socket_addr(&ss, len)))
}

/// An IPv4 or IPv6 address from a `sockaddr_storage` the kernel filled in.
fn socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Look at what has arrived on a connection without taking it off the
/// socket (`MSG_PEEK`), without waiting: the bytes that have (the start of
/// `buf`, which the call initialised). Empty is end of stream.
pub fn peek(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> Result<&[u8], Errno> {
    recv_nowait(fd, buf, libc::MSG_PEEK)
}

/// Read and drop whatever has arrived, without waiting; `Ok(0)` is end of
/// stream, `Err(EAGAIN)` nothing (more) to read.
pub fn discard(fd: RawFd, scratch: &mut [MaybeUninit<u8>]) -> Result<usize, Errno> {
    recv_nowait(fd, scratch, 0).map(<[u8]>::len)
}

/// Read what has arrived, without waiting: the bytes read (the start of
/// `buf`, which the call initialised). Empty is end of stream,
/// `Err(EAGAIN)` nothing (more) to read.
pub fn recv_now(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> Result<&[u8], Errno> {
    recv_nowait(fd, buf, 0)
}

/// One `recv(2)` with `flags` into `buf`'s spare capacity (none: room for
/// nothing), which grows `buf` by the bytes that came: how many; `Ok(0)` is
/// end of stream. An interrupted call is the caller's to retry (`EINTR`).
pub fn recv_append(fd: RawFd, buf: &mut Vec<u8>, flags: libc::c_int) -> Result<usize, Errno> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: recv writes at most spare.len() bytes into the spare capacity.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), flags) };
    if n < 0 {
        return Err(Errno::last());
    }
    let n = (n as usize).min(spare.len());
    // SAFETY: the n bytes after the length are initialised now (recv
    // reports no more than it was given room for; `min` makes sure), and
    // within the capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

fn recv_nowait(fd: RawFd, buf: &mut [MaybeUninit<u8>], flags: libc::c_int) -> Result<&[u8], Errno> {
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            let n = (n as usize).min(buf.len());
            // SAFETY: recv initialised the first n bytes of buf (it reports
            // no more than it was given room for; `min` makes sure).
            return Ok(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) });
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Send a fixed answer without waiting and without SIGPIPE; what does not
/// fit in the socket buffer is dropped.
pub fn send_nowait(fd: RawFd, data: &[u8]) -> Result<usize, Errno> {
    // SAFETY: send reads data.len() bytes from data.
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        Ok(n as usize)
    } else {
        Err(Errno::last())
    }
}

/// Most descriptors one message carries (a connection, and the file its
/// request waits in; or a response's file and its log).
pub const MAX_FDS: usize = 3;

/// Room for the control message of [`MAX_FDS`] descriptors
/// (`CMSG_SPACE(3 * sizeof(int))` is 32), aligned as a `cmsghdr`.
#[repr(C)]
union CmsgBuf {
    _align: libc::cmsghdr,
    bytes: [u8; 32],
}

/// Send one message, and with it a descriptor (`SCM_RIGHTS`) when `fd` is
/// given, on a Unix socket; never waits, never raises SIGPIPE. The receiver
/// gets its own descriptor for the same open file; the sender's stays open.
pub fn send_with_fd(sock: BorrowedFd<'_>, data: &[u8], fd: Option<RawFd>) -> Result<(), Errno> {
    match fd {
        Some(fd) => send_with_fds(sock, data, &[fd]),
        None => send_with_fds(sock, data, &[]),
    }
}

/// [`send_with_fd`] with up to [`MAX_FDS`] descriptors.
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
    assert!(
        fds.len() <= MAX_FDS,
        "at most {MAX_FDS} descriptors a message"
    );
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr and cmsg buffer; every pointer set
    // below points into locals that outlive the sendmsg call.
    let mut cbuf: CmsgBuf = unsafe { zeroed() };
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE(12) is 32 on Linux, within the 32-byte buffer;
        // CMSG_FIRSTHDR of a msghdr with a control buffer is non-null.
        unsafe {
            msg.msg_control = cbuf.bytes.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            let data = libc::CMSG_DATA(c) as *mut RawFd;
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *fd);
            }
        }
    }
    loop {
        // SAFETY: msg is fully initialised as above.
        let n = unsafe {
            libc::sendmsg(
                sock.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Receive one message without waiting, and the descriptors that came with
/// it, up to [`MAX_FDS`] in the order sent (marked close-on-exec on
/// arrival; more are closed). `Ok((0, _))` is end of stream; a message cut
/// short is refused with `EMSGSIZE` (the next one can be read). A
/// descriptor this process had no room for (`EMFILE`: the kernel drops it
/// and says `MSG_CTRUNC`) is missing (`None`) from an otherwise good
/// message: the caller, which knows what was meant to come, decides.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, [Option<OwnedFd>; MAX_FDS]), Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for a few descriptors, so that a sender passing too many cannot
    // make us leak the ones that did not fit.
    #[repr(C)]
    union Big {
        _align: libc::cmsghdr,
        bytes: [u8; 64],
    }
    // SAFETY: as in `send_with_fds`.
    let mut cbuf: Big = unsafe { zeroed() };
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = unsafe { cbuf.bytes.as_mut_ptr().cast() };
    msg.msg_controllen = 64;
    let n = loop {
        // SAFETY: msg points at live buffers of the lengths given.
        let n = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            )
        };
        if n >= 0 {
            break n as usize;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    };
    let mut got: [Option<OwnedFd>; MAX_FDS] = [None, None, None];
    let mut i = 0;
    // SAFETY: the kernel filled msg_control with well-formed cmsghdrs up to
    // msg_controllen; CMSG_NXTHDR stays within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let count =
                    ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                for k in 0..count {
                    let fd = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(k)));
                    if i < MAX_FDS {
                        got[i] = Some(fd);
                        i += 1;
                    } // else dropped: closed
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(Errno::EMSGSIZE);
    }
    Ok((n, got))
}

/// `sendfile(2)` of `count` bytes of `file` from `*offset` (advanced) to
/// the socket `fd`.
pub fn sendfile(fd: RawFd, file: &OwnedFd, offset: &mut i64, count: usize) -> Result<usize, Errno> {
    // SAFETY: the caller holds `fd` open for the call.
    let out = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::sys::sendfile::sendfile64(out, file, Some(offset), count)
}

/// Set or clear `O_NONBLOCK` on `fd` (a status flag of the open file: every
/// process holding it sees it, so it is cleared again before the file is
/// handed on).
pub fn set_nonblocking(fd: RawFd, on: bool) -> Result<(), Errno> {
    // SAFETY: fcntl on a descriptor number of this process.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Errno::last());
    }
    let flags = match on {
        true => flags | libc::O_NONBLOCK,
        false => flags & !libc::O_NONBLOCK,
    };
    // SAFETY: as above.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// `TCP_DEFER_ACCEPT`: the kernel completes `accept` only once the client has
/// sent data (or after about `secs`).
pub fn set_defer_accept(fd: BorrowedFd<'_>, secs: u32) -> Result<(), Errno> {
    let v = secs as libc::c_int;
    // SAFETY: setsockopt reads one c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            &v as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// Whether the kernel had to send a new connection's SYN-ACK again before
/// the handshake completed (`tcp_info.tcpi_total_retrans` > 0). On a listener
/// with `TCP_DEFER_ACCEPT`, a connection handed to `accept` with nothing to
/// read was either held until the deferral ran out (the SYN-ACK is resent
/// then, so this is true) or completed by a SYN cookie while the SYN queue
/// was full (no resend: its request may be on its way).
pub fn syn_ack_resent(fd: RawFd) -> bool {
    // SAFETY: tcp_info is plain data, all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into info and sets len.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    rc == 0 && info.tcpi_total_retrans > 0
}

/// `SO_RCVTIMEO` or `SO_SNDTIMEO`; zero means "never time out".
pub fn set_timeout(fd: BorrowedFd<'_>, send: bool, t: Duration) -> Result<(), Errno> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    let opt = if send {
        libc::SO_SNDTIMEO
    } else {
        libc::SO_RCVTIMEO
    };
    // SAFETY: setsockopt reads one timeval.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &tv as *const _ as *const libc::c_void,
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// `poll(2)` on a caller-owned array (reused across calls: no allocation).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize, Errno> {
    // SAFETY: fds is a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// A `SOCK_SEQPACKET` socket pair, both ends close-on-exec: message
/// boundaries are kept, and a peer that exits reads as end of stream.
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_child_keeps_only_what_it_is_given() {
        // In a forked child, so the test process keeps its descriptors.
        let (a, b) = seqpacket_pair().unwrap();
        let (c, d) = seqpacket_pair().unwrap();
        // SAFETY: the child only closes descriptors, checks and exits.
        match unsafe { libc::fork() } {
            0 => {
                let mut keep = [d.as_raw_fd(), -1, b.as_raw_fd()];
                close_all_but(&mut keep);
                // SAFETY: fcntl on a descriptor number; no memory passed.
                let open = |fd: RawFd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
                let ok = open(b.as_raw_fd())
                    && open(d.as_raw_fd())
                    && !open(a.as_raw_fd())
                    && !open(c.as_raw_fd())
                    && open(2);
                // SAFETY: _exit has no preconditions.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waitpid writes one int.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            }
        }
    }

    #[test]
    fn two_descriptors_travel_in_order() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, _x2) = seqpacket_pair().unwrap();
        let (y, _y2) = seqpacket_pair().unwrap();
        send_with_fds(a.as_fd(), b"two", &[x.as_raw_fd(), y.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, [p, q, _]) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd).unwrap().st_ino;
        assert_eq!(ino(&p.unwrap()), ino(&x));
        assert_eq!(ino(&q.unwrap()), ino(&y));
    }

    #[test]
    fn descriptors_travel_with_messages() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, _y) = seqpacket_pair().unwrap();
        send_with_fd(a.as_fd(), b"hello", Some(x.as_raw_fd())).unwrap();
        send_with_fd(a.as_fd(), b"plain", None).unwrap();
        let mut buf = [0u8; 16];
        let (n, [fd, _, _]) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let fd = fd.expect("a descriptor came along");
        assert_ne!(fd.as_raw_fd(), x.as_raw_fd(), "a new descriptor");
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec on arrival");
        let (n, [fd, _, _]) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fd.is_none()), (&b"plain"[..], true));
        assert_eq!(
            recv_with_fds(b.as_fd(), &mut buf).unwrap_err(),
            Errno::EAGAIN
        );
        drop(a);
        // The end comes once every copy of `a` is closed: a process another
        // test forks meanwhile (a sandbox trial, a worker) holds one for a
        // moment, so wait for it instead of expecting it at once.
        let mut pfd = [libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut pfd, 20_000), Ok(1), "the end within 20 s");
        assert_eq!(
            recv_with_fds(b.as_fd(), &mut buf).unwrap().0,
            0,
            "end of stream"
        );
    }
}
