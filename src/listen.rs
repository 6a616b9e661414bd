//! Listening sockets: taken from systemd (socket activation) or bound here.
//!
//! Invariant 3: every listener is close-on-exec (bound with `SOCK_CLOEXEC`;
//! inherited ones marked by `listenfd`) and non-blocking, so the supervisor can
//! accept until `EAGAIN` without ever sleeping in `accept`.
//!
//! Sockets passed by systemd belong to systemd: lbaws never binds, shuts down,
//! unlinks or (except by exiting) closes them. Only self-bound listeners are
//! opened and closed to follow a reload, and their Unix socket files unlinked.

use crate::config::{ListenAddr, ListenSpec};
use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage,
};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

pub struct Listener {
    pub fd: OwnedFd,
    /// What it is listening on, as bound (port 0 resolved).
    pub local: ListenAddr,
    /// `[[listen]] name`, or the `LISTEN_FDNAMES` entry of an inherited socket.
    pub name: Option<String>,
    /// From systemd: never closed or unlinked by us.
    pub inherited: bool,
    /// The entry this listener was bound from (self-bound only), to follow reloads.
    pub spec: Option<ListenSpec>,
    /// `TCP_DEFER_ACCEPT` is in force (`tune`): the kernel completes an
    /// accept only once data has come, or after `header_timeout` without
    /// any. A connection accepted with nothing to read has been silent for
    /// that long already.
    pub deferred: bool,
}

impl Listener {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Close a self-bound listener for good, removing its socket file.
    pub fn close(self) {
        if let (false, ListenAddr::Unix(path)) = (self.inherited, &self.local) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.local)?;
        if let Some(n) = &self.name {
            write!(f, " ({n})")?;
        }
        if self.inherited {
            write!(f, " [from systemd]")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Socket activation

/// What systemd passed, if `LISTEN_PID` is ours: the descriptors (held by
/// listenfd) and their names. The variables are removed from the environment
/// either way, so that no child sees them.
fn take_env() -> Option<(listenfd::ListenFd, Vec<Option<String>>)> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(String::from).collect())
        .unwrap_or_default();
    // SAFETY: single-threaded start-up.
    crate::sys::remove_env("LISTEN_FDNAMES");
    if !ours {
        crate::sys::remove_env("LISTEN_PID");
        crate::sys::remove_env("LISTEN_FDS");
        return None;
    }
    // listenfd reads LISTEN_FDS (and removes LISTEN_PID and LISTEN_FDS).
    let fds = listenfd::ListenFd::from_env();
    let names = (0..fds.len())
        .map(|i| names.get(i).filter(|n| !n.is_empty()).cloned())
        .collect();
    Some((fds, names))
}

/// Whether a descriptor is a listening stream socket (the loose check
/// sd_is_socket(3) recommends: no insisting on a port or a family).
fn is_listening_stream(fd: RawFd) -> bool {
    crate::sys::socket_type(fd) == Ok(libc::SOCK_STREAM) && crate::sys::is_listening(fd)
}

/// Listening sockets passed by systemd, matched to `[[listen]]` entries by name.
/// `None` when lbaws was not socket-activated. A passed descriptor that is not a
/// listening stream socket is left in place (not closed) and reported.
pub fn from_systemd(specs: &[ListenSpec]) -> Option<Result<Vec<Listener>, String>> {
    let (mut fds, names) = take_env()?;
    if fds.len() == 0 {
        return None;
    }
    let mut out = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let fd = SD_LISTEN_FDS_START + i as RawFd;
        let label = name.clone().unwrap_or_else(|| "unnamed".into());
        if !is_listening_stream(fd) {
            crate::warn!(
                "inherited fd {fd} ({label}) is not a listening stream socket; left alone"
            );
            continue;
        }
        // listenfd checks the family and marks the descriptor close-on-exec.
        let owned = match fds.take_tcp_listener(i) {
            Ok(Some(l)) => OwnedFd::from(l),
            _ => match fds.take_unix_listener(i) {
                Ok(Some(l)) => OwnedFd::from(l),
                Ok(None) => continue,
                Err(e) => {
                    crate::warn!("inherited fd {fd} ({label}): {e}; left alone");
                    continue;
                }
            },
        };
        if let Err(e) = set_nonblocking(&owned) {
            return Some(Err(format!("inherited fd {fd} ({label}): {e}")));
        }
        let local = local_addr(&owned).unwrap_or(ListenAddr::Unix("?".into()));
        let matched = name
            .as_ref()
            .and_then(|n| specs.iter().find(|s| s.name.as_ref() == Some(n)));
        if matched.is_none() {
            crate::info!("inherited socket {local} named {label:?} matches no [[listen]] name; serving it with defaults");
        }
        out.push(Listener {
            fd: owned,
            local,
            name,
            inherited: true,
            spec: None,
            deferred: false,
        });
    }
    for s in specs {
        if s.name.is_none() || !out.iter().any(|l| l.name == s.name) {
            crate::warn!("[[listen]] {} was not passed by systemd and is not bound: socket-activated lbaws binds nothing itself", s.address);
        }
    }
    if out.is_empty() {
        return Some(Err("systemd passed no usable listening socket".into()));
    }
    Some(Ok(out))
}

const SD_LISTEN_FDS_START: RawFd = 3;

/// In an image started by an upgrade in place: a listener the previous image
/// held, open across the exec. A self-bound one is matched to its
/// `[[listen]]` entry (by address; a port-0 entry by its host), so that
/// reloads follow it as before.
pub fn adopt(
    fd: RawFd,
    inherited: bool,
    name: Option<String>,
    specs: &[ListenSpec],
    taken: &[ListenAddr],
) -> Result<Listener, String> {
    let not_listening = || format!("carried fd {fd} is not a listening socket");
    // SAFETY: handed over open by the previous image, for this one to own;
    // nothing else in this image holds it (the record names it once).
    let owned = crate::sys::adopt_fd(fd).map_err(|_| not_listening())?;
    crate::sys::set_cloexec(fd, true);
    if !is_listening_stream(fd) {
        return Err(not_listening());
    }
    let local = local_addr(&owned).ok_or_else(|| format!("carried fd {fd}: no address"))?;
    let spec = (!inherited)
        .then(|| {
            let free = |s: &&ListenSpec| !taken.contains(&s.address);
            let exact = specs.iter().filter(free).find(|s| s.address == local);
            exact.or_else(|| {
                specs
                    .iter()
                    .filter(free)
                    .find(|s| match (&s.address, &local) {
                        (ListenAddr::Tcp(a), ListenAddr::Tcp(b)) => {
                            a.port() == 0 && a.ip() == b.ip()
                        }
                        _ => false,
                    })
            })
        })
        .flatten()
        .cloned();
    Ok(Listener {
        fd: owned,
        local,
        name,
        inherited,
        spec,
        deferred: false,
    })
}

/// inetd mode: the one accepted connection systemd (`Accept=yes`) or inetd
/// handed over, on fd 3 with `LISTEN_FDNAMES=connection`, or else on fd 0.
pub fn inherited_connection() -> Result<OwnedFd, String> {
    let fd = match take_env() {
        None => 0,
        Some((mut fds, _)) if fds.len() == 1 => match fds.take_raw_fd(0) {
            Ok(Some(fd)) => fd,
            _ => return Err("--inetd: cannot take the passed descriptor".into()),
        },
        Some((fds, _)) => {
            return Err(format!(
                "--inetd expects one connection, systemd passed {}",
                fds.len()
            ))
        }
    };
    let not_stream = || format!("--inetd: fd {fd} is not a connected stream socket");
    if crate::sys::socket_type(fd) != Ok(libc::SOCK_STREAM) {
        return Err(not_stream());
    }
    if fd != 0 {
        crate::sys::set_cloexec(fd, true);
    }
    // SAFETY: fd is ours to own: passed to this process for this purpose
    // (listenfd let go of it; fd 0 is inetd's connection, read by nothing
    // else here).
    crate::sys::adopt_fd(fd).map_err(|_| not_stream())
}

// ---------------------------------------------------------------------------
// Binding

/// Bind and listen per one `[[listen]]` entry. The error names the address and errno.
pub fn bind(spec: &ListenSpec) -> Result<Listener, String> {
    let fail = |what: &str, e: Errno| format!("cannot {what} {}: {e}", spec.address);
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let fd = match &spec.address {
        ListenAddr::Tcp(addr) => {
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket::socket(family, SockType::Stream, flags, None)
                .map_err(|e| fail("create socket for", e))?;
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
                .map_err(|e| fail("set SO_REUSEADDR on", e))?;
            if addr.is_ipv6() {
                socket::setsockopt(&fd, sockopt::Ipv6V6Only, &spec.v6only)
                    .map_err(|e| fail("set IPV6_V6ONLY on", e))?;
            }
            let sa = SockaddrStorage::from(*addr);
            socket::bind(fd.as_raw_fd(), &sa).map_err(|e| fail("bind", e))?;
            fd
        }
        ListenAddr::Unix(path) => {
            remove_stale(path).map_err(|m| format!("cannot bind {}: {m}", spec.address))?;
            let fd = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None)
                .map_err(|e| fail("create socket for", e))?;
            let sa = socket::UnixAddr::new(path.as_path()).map_err(|e| fail("bind", e))?;
            socket::bind(fd.as_raw_fd(), &sa).map_err(|e| fail("bind", e))?;
            if let Some(mode) = spec.mode {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
            }
            if spec.owner.is_some() || spec.group.is_some() {
                std::os::unix::fs::chown(path, spec.owner, spec.group)
                    .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
            }
            fd
        }
    };
    let backlog = Backlog::new(spec.backlog).unwrap_or(Backlog::MAXCONN);
    socket::listen(&fd, backlog).map_err(|e| fail("listen on", e))?;
    let local = local_addr(&fd).unwrap_or_else(|| spec.address.clone());
    Ok(Listener {
        fd,
        local,
        name: spec.name.clone(),
        inherited: false,
        spec: Some(spec.clone()),
        deferred: false,
    })
}

/// A Unix socket file left by a server that is gone is replaced; one that a live
/// server still accepts on is not.
fn remove_stale(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if !m.file_type().is_socket() => Err("path exists and is not a socket".into()),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err("address in use: a server is accepting on it".into()),
            Err(_) => {
                std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket: {e}"))
            }
        },
    }
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).map(|_| ())
}

fn local_addr(fd: &OwnedFd) -> Option<ListenAddr> {
    let sa: SockaddrStorage = socket::getsockname(fd.as_raw_fd()).ok()?;
    if let Some(a) = sa.as_sockaddr_in() {
        return Some(ListenAddr::Tcp(SocketAddr::V4((*a).into())));
    }
    if let Some(a) = sa.as_sockaddr_in6() {
        return Some(ListenAddr::Tcp(SocketAddr::V6((*a).into())));
    }
    if let Some(u) = sa.as_unix_addr() {
        return Some(match u.path() {
            Some(p) => ListenAddr::Unix(p.to_path_buf()),
            None => ListenAddr::Unix("@abstract".into()),
        });
    }
    let _ = sa.family();
    None
}

/// How often a blocked send returns to the worker, which then checks its
/// deadlines (`body_timeout` between progress, `min_send_rate`): the
/// `SO_SNDTIMEO` of every connection.
pub const SEND_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Socket options accepted connections inherit from their listener, set at
/// start-up and after each reload (on systemd's sockets too; they only
/// concern accepting and sending):
/// - `SO_SNDTIMEO` = [`SEND_TICK`], which saves every worker a system call;
/// - `TCP_DEFER_ACCEPT` = `header_timeout`: the kernel hands over a TCP
///   connection only once its client has sent something (or after about that
///   long), so a silent connection costs not even a descriptor until then.
pub fn tune(listeners: &mut [Listener], limits: &crate::config::Limits) {
    let defer = limits.header_timeout.as_secs_f64().ceil().max(1.0) as u32;
    for l in listeners {
        set_send_tick(&l.fd);
        if let Err(e) = head_room(&l.fd, limits.max_header_bytes) {
            crate::warn!("{l}: {e}");
        }
        l.deferred = false;
        if matches!(l.local, ListenAddr::Tcp(_)) {
            match crate::sys::set_defer_accept(l.fd.as_fd(), defer) {
                Ok(()) => l.deferred = true,
                Err(e) => crate::warn!("{l}: cannot set TCP_DEFER_ACCEPT: {e}"),
            }
        }
    }
}

/// Heads up to this size fit the receive buffer a connection has by
/// default (`tcp_rmem`'s 128 KiB, of which about half holds data).
const DEFAULT_HEAD_ROOM: usize = 48 << 10;

/// Room for a whole request head in each connection's receive buffer. The
/// supervisor and the gate look at a head without reading it (`MSG_PEEK`),
/// so all of it must fit in the socket before anything is read, or it is
/// never seen whole. For `max_header_bytes` above what the default buffer
/// holds, the listener's `SO_RCVBUF` (which accepted connections inherit)
/// is set to twice that plus room for the kernel's bookkeeping; an error
/// says when `net.core.rmem_max` caps it below what is needed.
pub fn head_room(fd: &OwnedFd, max_header_bytes: usize) -> Result<(), String> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt::RcvBuf};
    if max_header_bytes <= DEFAULT_HEAD_ROOM {
        return Ok(());
    }
    let want = 2 * max_header_bytes + (64 << 10);
    setsockopt(fd, RcvBuf, &want).map_err(|e| format!("SO_RCVBUF: {e}"))?;
    // The kernel doubles the value (its bookkeeping), capped by rmem_max.
    let got = getsockopt(fd, RcvBuf).map_err(|e| format!("SO_RCVBUF: {e}"))? / 2;
    match got >= want {
        true => Ok(()),
        false => Err(format!(
            "net.core.rmem_max lets a connection buffer {got} bytes: request heads near max_header_bytes ({max_header_bytes}) may never be seen whole (408); raise it to {want} or more"
        )),
    }
}

/// For `lbaws check`: whether this machine's `net.core.rmem_max` lets
/// `head_room` make room for heads of `max_header_bytes`.
pub fn head_room_check(max_header_bytes: usize) -> Option<String> {
    if max_header_bytes <= DEFAULT_HEAD_ROOM {
        return None;
    }
    let want = 2 * max_header_bytes + (64 << 10);
    let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (max < want).then(|| {
        format!(
            "warning: max_header_bytes = {max_header_bytes} needs receive buffers of {want} bytes, and net.core.rmem_max is {max}: heads near the maximum may never be seen whole (408); raise it (sysctl net.core.rmem_max={want})"
        )
    })
}

/// `SO_SNDTIMEO` = [`SEND_TICK`] on one socket (`--inetd`'s connection).
pub fn set_send_tick(fd: &OwnedFd) {
    let _ = crate::sys::set_timeout(fd.as_fd(), true, SEND_TICK);
}

// ---------------------------------------------------------------------------
// Peers of accepted connections

/// Who is on the other end of a connection (Unix peers have no useful address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Inet(SocketAddr),
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Inet(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// A peer's host, without the port (`Peer::host`).
pub struct Host(Peer);

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Peer::Inet(a) => write!(f, "{}", a.ip().to_canonical()),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

impl Peer {
    /// Its host, as admission counts it and the logs name it.
    pub fn host(self) -> Host {
        Host(self)
    }

    /// From the address `accept4`/`getpeername` filled in.
    pub fn from_storage(sa: &SockaddrStorage) -> Peer {
        if let Some(a) = sa.as_sockaddr_in() {
            Peer::Inet(SocketAddr::V4((*a).into()))
        } else if let Some(a) = sa.as_sockaddr_in6() {
            Peer::Inet(SocketAddr::V6((*a).into()))
        } else {
            Peer::Unix
        }
    }

    pub fn of(fd: &OwnedFd) -> Peer {
        socket::getpeername::<SockaddrStorage>(fd.as_raw_fd())
            .map_or(Peer::Unix, |sa| Peer::from_storage(&sa))
    }
}
