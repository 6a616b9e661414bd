//! The scoreboard: memory shared by the supervisor and every worker (a memfd
//! mapped `MAP_SHARED` before the first fork, so every worker inherits it;
//! the memfd lets an upgrade in place map it again in the new image), where
//! workers leave what the supervisor needs to see of them without a message
//! or a system call:
//!
//! - one slot per live worker, with the time of its last progress (a byte
//!   moved, a request begun, a CGI stage reached): the supervisor's stall
//!   backstop ends a worker that made none for `[limits] stall_timeout`;
//! - a header with the access-log lines lost to write errors, which the
//!   supervisor reports;
//! - what the status page shows (`http::status`; a worker answers it, so it
//!   can only show what is here): each slot also holds the worker's pid
//!   (set by the supervisor at the fork, cleared when it is reaped, so the
//!   live slots can be told), its peer, its state (reading a head or a
//!   body, writing, running CGI, waiting on keep-alive, closing), the
//!   request line, bytes in and out and times; the header counts responses
//!   by status class, body bytes, request bytes received and a request
//!   duration histogram (written by workers; the gate adds the request
//!   bytes it receives), access-log lines lost in all, and what the
//!   supervisor counts (accepted and refused connections, waiting and
//!   parked ones, worker ends by cause, reloads, upgrades, the gate's pid;
//!   [`Sup`]), which it adds to or sets here as they change.
//!
//! - a row of counters per site (`[[site]]`, by label: responses by class,
//!   body bytes, the duration histogram), written by workers; row 0 is
//!   `other` (responses before a site was known, and sites past the
//!   table's [`SITE_ROWS`]). The supervisor gives each site of a
//!   configuration its row when it takes the configuration into use
//!   ([`label_sites`]); a label keeps its row across reloads, so its
//!   counters only grow.
//!
//! The layout is part of the upgrade record's format (`supervisor::upgrade::FORMAT`):
//! a new image maps the memory the old one's workers still write to.
//!
//! The mapping is reserved for every possible slot (`MAX_PROCESSES`) but
//! only pages that hold live slots are ever touched; a fork copies none of
//! it (shared mappings are faulted in, not copied). A worker writes only its
//! own slot and the header's counters, with atomics; the supervisor reads.
//! The mapping and the typed references into it are `sys::shared`'s: the
//! header, the slots and the site rows are declared with its
//! `shared_struct!`, which refuses a field that is not an atomic.

mod owed;
mod read;
mod sites;
pub use owed::log_owed;
pub use read::{sites, totals, workers, SiteTotals, Totals, Worker};
use sites::{label_of, set_label, site_row, SITES};
pub use sites::{label_sites, OTHER, SITE_ROWS};

use crate::sys::shared::Mapping;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Upper bounds of the request duration histogram's buckets, microseconds
/// (the last bucket, +Inf, is implied).
pub const BUCKETS_US: [u64; 12] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// What the supervisor keeps in the header for the status page (a worker
/// answers it, and sees nothing of the supervisor's own memory): counters
/// it adds to, and values it sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sup {
    /// Connections accepted on the listeners.
    Accepted,
    /// Answered 503: no worker could be forked.
    RefusedNoWorker,
    /// Refused at once (503 if a request had come): the source held its
    /// share of the gate (`max_pending_per_source`).
    RefusedPerSource,
    /// Refused (503 if a request had come): the gate was full of what it
    /// may not close (complete requests), down, or could not take it.
    RefusedGateFull,
    /// Answered 503 by the gate: waited `queue_timeout` for a worker.
    RefusedQueueTimeout,
    /// Closed by the gate to make room at `max_pending`: a connection that
    /// sent nothing, an idle parked one, or (408) one with half a head.
    Evicted,
    /// Complete requests waiting in the gate for a worker now.
    Queued,
    /// Connections workers handed back at once after a response, because
    /// requests were waiting for a worker (keep-alive connections take turns).
    Turns,
    /// Closed on a `proxy_protocol` listener: from outside `proxy_from`, or
    /// without a valid PROXY header in time.
    RefusedProxy,
    /// Idle connections workers handed back (parked).
    Parks,
    /// Connections in the gate now: head incomplete, and parked.
    Waiting,
    Parked,
    Reloads,
    ReloadsFailed,
    /// Upgrades in place this scoreboard has lived through.
    Upgrades,
    /// Worker ends: code 0, another code, a signal, killed by its sandbox,
    /// ended by the stall backstop.
    ExitOk,
    ExitError,
    ExitSignal,
    ExitSandbox,
    ExitStalled,
    /// Slots ever used (the live ones are below it).
    HighWater,
    /// When the first image started, seconds since the epoch.
    StartedUnix,
    /// The gate's pid (set when the supervisor starts it; a gate that died
    /// leaves its pid here until the next one starts), so that the status
    /// page can show its process.
    GatePid,
}
const SUP_COUNT: usize = Sup::GatePid as usize + 1;

crate::sys::shared::shared_struct! {
#[repr(C)]
struct Header {
    /// Access-log lines not written (whole), and the last error's errno.
    lost_lines: AtomicU64,
    lost_errno: AtomicU32,
    /// A line was cut short and could not be taken back: the next writer
    /// starts with a newline, so the fragment stands on a line of its own.
    cut: AtomicU32,
    /// Responses by status class, 1xx to 5xx.
    requests: [AtomicU64; 5],
    /// Response body bytes sent.
    bytes_sent: AtomicU64,
    /// The request duration histogram: microseconds in all, and the count
    /// of each bucket (not cumulative; the last is +Inf).
    duration_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sup: [AtomicU64; SUP_COUNT],
    // Appended after `sup` (as `Sup::GatePid` was at its end): an image
    // that maps an older scoreboard, whose header ended before them, finds
    // them zero, and the older image's workers never write them.
    /// Bytes read from clients: request heads and bodies, by workers and by
    /// the gate (the bodies it receives).
    bytes_received: AtomicU64,
    /// Access-log lines not written (whole), since the scoreboard was made
    /// (`lost_lines` is the supervisor's to take and report).
    lost_total: AtomicU64,
    /// Site rows with a label (row 0, `other`, included).
    site_rows: AtomicU32,
}
}

/// What a worker is doing, in its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum State {
    /// Forked, not yet reading.
    Starting = 0,
    /// Reading a request head.
    Head = 1,
    /// Reading a request body.
    Body = 2,
    /// Answering (writing the response).
    Write = 3,
    /// Running a CGI script and passing on its output.
    Cgi = 4,
    /// Waiting for the next request on a keep-alive connection (it is
    /// parked, handed back to the gate, if none comes soon).
    KeepAlive = 5,
    /// Closing the connection gracefully.
    Closing = 6,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Starting,
        State::Head,
        State::Body,
        State::Write,
        State::Cgi,
        State::KeepAlive,
        State::Closing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Head => "head",
            State::Body => "body",
            State::Write => "write",
            State::Cgi => "cgi",
            State::KeepAlive => "keepalive",
            State::Closing => "closing",
        }
    }

    /// One letter, as in Apache's scoreboard.
    pub fn letter(self) -> char {
        match self {
            State::Starting => 'S',
            State::Head => 'R',
            State::Body => 'B',
            State::Write => 'W',
            State::Cgi => 'C',
            State::KeepAlive => 'K',
            State::Closing => 'G',
        }
    }

    fn from(v: u32) -> State {
        State::ALL
            .get(v as usize)
            .copied()
            .unwrap_or(State::Starting)
    }
}

/// Bytes of the request line a slot keeps (longer ones are cut).
pub const LINE_BYTES: usize = 128;

crate::sys::shared::shared_struct! {
#[repr(C, align(64))]
struct Slot {
    /// CLOCK_MONOTONIC, milliseconds, of the worker's last progress.
    progress_ms: AtomicU64,
    /// The system call the worker's seccomp filter refused it, + 1 (0: none).
    denied: AtomicU64,
    /// The worker's pid (0: the slot is free), set by the supervisor.
    pid: AtomicU32,
    state: AtomicU32,
    /// CLOCK_MONOTONIC, microseconds, when the current request began.
    request_us: AtomicU64,
    /// `now_ms` when the worker was forked.
    forked_ms: AtomicU64,
    /// Bytes read from and written to the connection by this worker.
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Requests answered on the connection (by earlier workers too).
    requests: AtomicU64,
    /// The peer: an IPv6 address (IPv4 mapped), and its port | kind << 16
    /// (kind 0: none, 1: inet, 2: unix).
    peer: [AtomicU64; 2],
    peer_port: AtomicU32,
    line_len: AtomicU32,
    /// The current request's access line is owed (1: its request line is
    /// known and the worker has not logged it yet): if the worker dies
    /// first, the supervisor writes it ([`log_owed`]).
    owed: AtomicU32,
    /// The status of the current request's response head (0: none sent),
    /// and the value of `bytes_out` where its body begins.
    status: AtomicU32,
    /// The site row of the current request (0: none known yet).
    site: AtomicU32,
    body_from: AtomicU64,
    line: [AtomicU64; LINE_BYTES / 8],
}
}

const HEADER: usize = 1024;
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);
const _: () = assert!(std::mem::size_of::<Slot>() == 256);

/// The mapping (none yet: no scoreboard).
static MAP: std::sync::OnceLock<Mapping> = std::sync::OnceLock::new();
static SLOTS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This worker's slot + 1 (0: not a worker).
    static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The memfd behind the mapping (-1: none), kept so that an upgrade in
/// place can map the same memory again in the new image.
static FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// In the supervisor, before the first fork: room for `slots` slots, in a
/// memfd mapped shared (sparse: only pages of live slots are ever
/// touched). False if the memory cannot be had.
pub fn create(slots: usize) -> bool {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let bytes = HEADER + SITES + slots * std::mem::size_of::<Slot>();
    let Ok(fd) = memfd_create(c"lbaws-scoreboard", MFdFlags::MFD_CLOEXEC) else {
        return false;
    };
    if nix::unistd::ftruncate(&fd, bytes as i64).is_err() {
        return false;
    }
    map(fd, slots)
}

/// In an image started by an upgrade in place: the scoreboard the previous
/// image made (and its workers still write to), from its memfd.
pub fn adopt(fd: RawFd) -> bool {
    // SAFETY: the descriptor was handed over open, for this image to own;
    // the record names it once.
    let Ok(fd) = crate::sys::adopt_fd(fd) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(&fd) else {
        return false;
    };
    let slots = (st.st_size as usize).saturating_sub(HEADER + SITES) / std::mem::size_of::<Slot>();
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    map(fd, slots)
}

/// The memfd behind the scoreboard, for an upgrade in place.
pub fn fd() -> RawFd {
    FD.load(Ordering::Relaxed)
}

/// Map the memfd (closed if it cannot be), once per process: zero-filled
/// where never written, which is a valid state for every atomic in it.
fn map(fd: OwnedFd, slots: usize) -> bool {
    let bytes = HEADER + SITES + slots * std::mem::size_of::<Slot>();
    let Ok(mapping) = Mapping::new(fd.as_fd(), bytes) else {
        return false; // the memfd closes here
    };
    if MAP.set(mapping).is_err() {
        return false; // mapped already
    }
    FD.store(fd.into_raw_fd(), Ordering::Relaxed);
    SLOTS.store(slots, Ordering::Relaxed);
    if let (Some(h), Some(other)) = (header(), site_row(0)) {
        if h.site_rows.load(Ordering::Relaxed) == 0 {
            set_label(other, OTHER);
            h.site_rows.store(1, Ordering::Relaxed);
        }
    }
    true
}

/// The mapping starts with the header.
fn header() -> Option<&'static Header> {
    MAP.get()?.get(0)
}

/// The slots follow the header and the site rows.
fn slot(i: usize) -> Option<&'static Slot> {
    if i >= SLOTS.load(Ordering::Relaxed) {
        return None;
    }
    MAP.get()?
        .get(HEADER + SITES + i * std::mem::size_of::<Slot>())
}

/// Milliseconds of CLOCK_MONOTONIC (coarse: a tick's precision, no system
/// call).
pub fn now_ms() -> u64 {
    clock(libc::CLOCK_MONOTONIC_COARSE).as_millis() as u64
}

/// Microseconds of CLOCK_MONOTONIC (precise: for request durations; a
/// vDSO call, no system call).
pub fn now_us() -> u64 {
    clock(libc::CLOCK_MONOTONIC).as_micros() as u64
}

fn clock(id: libc::clockid_t) -> std::time::Duration {
    crate::sys::clock(id)
}

fn mine() -> Option<&'static Slot> {
    let i = MINE.with(std::cell::Cell::get);
    if i == 0 {
        return None;
    }
    slot(i - 1)
}

// ---------------------------------------------------------------------------
// The supervisor's side

/// In the supervisor, before it forks a worker for slot `i` (for a
/// connection from `peer` that has had `served` requests): a fresh start.
pub fn assign(i: usize, peer: crate::listen::Peer, served: u32) {
    let Some(s) = slot(i) else { return };
    let now = now_ms();
    s.progress_ms.store(now, Ordering::Relaxed);
    s.forked_ms.store(now, Ordering::Relaxed);
    s.denied.store(0, Ordering::Relaxed);
    s.state.store(State::Starting as u32, Ordering::Relaxed);
    s.request_us.store(0, Ordering::Relaxed);
    s.bytes_in.store(0, Ordering::Relaxed);
    s.bytes_out.store(0, Ordering::Relaxed);
    s.requests.store(served as u64, Ordering::Relaxed);
    s.line_len.store(0, Ordering::Relaxed);
    s.owed.store(0, Ordering::Relaxed);
    s.status.store(0, Ordering::Relaxed);
    s.site.store(0, Ordering::Relaxed);
    let (addr, port) = match peer {
        crate::listen::Peer::Inet(a) => {
            let ip = match a.ip() {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                std::net::IpAddr::V6(v6) => v6,
            };
            (ip.to_bits(), a.port() as u32 | 1 << 16)
        }
        crate::listen::Peer::Unix => (0, 2 << 16),
    };
    s.peer[0].store((addr >> 64) as u64, Ordering::Relaxed);
    s.peer[1].store(addr as u64, Ordering::Relaxed);
    s.peer_port.store(port, Ordering::Relaxed);
    if let Some(h) = header() {
        h.sup[Sup::HighWater as usize].fetch_max(i as u64 + 1, Ordering::Relaxed);
    }
}

/// In the supervisor: slot `i` is worker `pid`'s (after the fork), or free
/// again (`pid` 0, once reaped).
pub fn set_pid(i: usize, pid: u32) {
    if let Some(s) = slot(i) {
        s.pid.store(pid, Ordering::Relaxed);
    }
}

/// Add to one of the supervisor's counters (the gate and workers count a
/// few of them too: their own refusals, evictions, turns).
pub fn add(what: Sup, n: u64) {
    if let Some(h) = header() {
        h.sup[what as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// One of the supervisor's values, read anywhere (one load: a worker asks
/// after each response whether requests wait for a worker, `Sup::Queued`).
pub fn get(what: Sup) -> u64 {
    header().map_or(0, |h| h.sup[what as usize].load(Ordering::Relaxed))
}

/// In the supervisor: set one of its values.
pub fn set(what: Sup, v: u64) {
    if let Some(h) = header() {
        h.sup[what as usize].store(v, Ordering::Relaxed);
    }
}

/// In the supervisor at start: the start time, unless an earlier image of
/// this process set it (an upgrade in place keeps the scoreboard).
pub fn started() {
    if let Some(h) = header() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let _ = h.sup[Sup::StartedUnix as usize].compare_exchange(
            0,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

// ---------------------------------------------------------------------------
// A worker's side: its own slot (relaxed stores, no system call)

/// In a worker: this slot is mine.
pub fn enter(i: usize) {
    MINE.with(|m| m.set(i + 1));
    progress();
}

/// In a worker: its slot, if it has one.
pub fn my_slot() -> Option<usize> {
    MINE.with(std::cell::Cell::get).checked_sub(1)
}

/// In a worker: something moved. Cheap enough for every read and write.
pub fn progress() {
    if let Some(s) = mine() {
        s.progress_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// In a worker: what it is doing now.
pub fn set_state(state: State) {
    if let Some(s) = mine() {
        s.state.store(state as u32, Ordering::Relaxed);
    }
}

/// When this process's current request began (`now_us`), slot or none.
static BEGAN_US: AtomicU64 = AtomicU64::new(0);

/// In a worker: a request begins (its head is arriving).
pub fn begin_request() {
    let now = now_us();
    BEGAN_US.store(now, Ordering::Relaxed);
    if let Some(s) = mine() {
        s.state.store(State::Head as u32, Ordering::Relaxed);
        s.request_us.store(now, Ordering::Relaxed);
        s.line_len.store(0, Ordering::Relaxed);
        s.status.store(0, Ordering::Relaxed);
        s.site.store(0, Ordering::Relaxed);
    }
}

/// In a worker: the current request is for the site of this row.
pub fn set_site(row: u32) {
    if let Some(s) = mine() {
        s.site.store(row, Ordering::Relaxed);
    }
}

/// In a worker: the request line of the request it is answering (cut to
/// [`LINE_BYTES`]).
pub fn request_line(parts: &[&[u8]]) {
    let Some(s) = mine() else { return };
    let mut buf = [0u8; LINE_BYTES];
    let mut n = 0;
    for (k, part) in parts.iter().enumerate() {
        if k > 0 && n < LINE_BYTES {
            buf[n] = b' ';
            n += 1;
        }
        let take = part.len().min(LINE_BYTES - n);
        buf[n..n + take].copy_from_slice(&part[..take]);
        n += take;
    }
    for (w, chunk) in s.line.iter().zip(buf.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        w.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
    s.line_len.store(n as u32, Ordering::Relaxed);
    s.owed.store(1, Ordering::Relaxed);
}

/// In a worker: a response head of `len` bytes with `status` is about to
/// be written (what follows it is the body).
pub fn response_head(status: u16, len: usize) {
    if let Some(s) = mine() {
        s.status.store(status as u32, Ordering::Relaxed);
        let from = s.bytes_out.load(Ordering::Relaxed) + len as u64;
        s.body_from.store(from, Ordering::Relaxed);
    }
}

/// In a worker: bytes read from the connection.
pub fn bytes_in(n: usize) {
    if let Some(s) = mine() {
        s.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    bytes_received(n);
}

/// Bytes read from a client (a worker's through [`bytes_in`]; the gate's,
/// of the request bodies it receives, directly).
pub fn bytes_received(n: usize) {
    if let Some(h) = header() {
        h.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// In a worker: bytes written to the connection (each write: the access
/// line the supervisor may owe counts the body from these).
pub fn bytes_out(n: usize) {
    if let Some(s) = mine() {
        s.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// In a worker: a response ended (sent whole or cut short) with `status`
/// and `body_bytes`: counted by class, and its duration since
/// [`begin_request`] in the histogram, in all and for its site. The
/// duration, microseconds.
pub fn request_done(status: u16, body_bytes: u64) -> u64 {
    // No request begun in this process (the gate's answers): no duration.
    let took = match BEGAN_US.load(Ordering::Relaxed) {
        0 => 0,
        began => now_us().saturating_sub(began),
    };
    if let Some(s) = mine() {
        // Its access line is written (or the log is off): not owed.
        s.owed.store(0, Ordering::Relaxed);
    }
    let Some(h) = header() else { return took };
    if status < 100 {
        return took; // nothing was sent
    }
    let class = (status / 100).min(5) as usize - 1;
    h.requests[class].fetch_add(1, Ordering::Relaxed);
    h.bytes_sent.fetch_add(body_bytes, Ordering::Relaxed);
    // Without a slot (the gate's answers): row 0, `other`.
    let mine = mine();
    let row = site_row(mine.map_or(0, |s| s.site.load(Ordering::Relaxed) as usize));
    if let Some(r) = row {
        r.requests[class].fetch_add(1, Ordering::Relaxed);
        r.bytes_sent.fetch_add(body_bytes, Ordering::Relaxed);
    }
    if let Some(s) = mine {
        s.requests.fetch_add(1, Ordering::Relaxed);
        h.duration_us.fetch_add(took, Ordering::Relaxed);
        let b = BUCKETS_US.partition_point(|&le| le < took);
        h.buckets[b].fetch_add(1, Ordering::Relaxed);
        if let Some(r) = row {
            r.duration_us.fetch_add(took, Ordering::Relaxed);
            r.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
    }
    took
}

/// In a worker: when its current request began (`now_us`), 0 before any.
pub fn began_us() -> u64 {
    BEGAN_US.load(Ordering::Relaxed)
}

/// In the gate, as a response a worker handed it ends (`gate/tail.rs`):
/// counted as the worker would have, in site row `row`, with the time since
/// the request began (`began_us`, on the same clock). Returns that time.
pub fn tail_done(row: u32, status: u16, body_bytes: u64, began_us: u64) -> u64 {
    let took = match began_us {
        0 => 0,
        b => now_us().saturating_sub(b),
    };
    let Some(h) = header() else { return took };
    if status < 100 {
        return took;
    }
    let class = (status / 100).min(5) as usize - 1;
    let b = BUCKETS_US.partition_point(|&le| le < took);
    h.requests[class].fetch_add(1, Ordering::Relaxed);
    h.bytes_sent.fetch_add(body_bytes, Ordering::Relaxed);
    h.duration_us.fetch_add(took, Ordering::Relaxed);
    h.buckets[b].fetch_add(1, Ordering::Relaxed);
    if let Some(r) = site_row(row as usize) {
        r.requests[class].fetch_add(1, Ordering::Relaxed);
        r.bytes_sent.fetch_add(body_bytes, Ordering::Relaxed);
        r.duration_us.fetch_add(took, Ordering::Relaxed);
        r.buckets[b].fetch_add(1, Ordering::Relaxed);
    }
    took
}

/// In a worker's `SIGSYS` handler: the sandbox refused system call `nr`.
/// (A thread-local read and an atomic store: safe in a signal handler.)
pub fn denied(nr: i32) {
    let i = MINE.with(std::cell::Cell::get);
    if i > 0 {
        if let Some(s) = slot(i - 1) {
            s.denied.store(nr as u32 as u64 + 1, Ordering::Relaxed);
        }
    }
}

/// In the supervisor, for a worker that ended by `SIGSYS`: the system call
/// its filter refused, if it recorded one.
pub fn denied_call(i: usize) -> Option<i32> {
    let v = slot(i)?.denied.load(Ordering::Relaxed);
    (v > 0).then(|| (v - 1) as u32 as i32)
}

/// In the supervisor: the last progress of slot `i`, in `now_ms` time.
pub fn last_progress(i: usize) -> u64 {
    slot(i).map_or(u64::MAX, |s| s.progress_ms.load(Ordering::Relaxed))
}

/// An access-log line was not written whole (`errno` of the failure); `cut`:
/// part of it was, so the next line must start on a line of its own.
pub fn lost_line(errno: i32, cut: bool) {
    if let Some(h) = header() {
        h.lost_lines.fetch_add(1, Ordering::Relaxed);
        h.lost_total.fetch_add(1, Ordering::Relaxed);
        h.lost_errno.store(errno as u32, Ordering::Relaxed);
        if cut {
            h.cut.store(1, Ordering::Relaxed);
        }
    }
}

/// Before writing an access-log line: was the last one cut short (then
/// this one starts with a newline)? Clears the mark.
pub fn take_cut() -> bool {
    header().is_some_and(|h| {
        h.cut.load(Ordering::Relaxed) != 0 && h.cut.swap(0, Ordering::Relaxed) != 0
    })
}

/// In the supervisor: lines lost since the last call, and the last errno.
/// Access-log lines lost and not yet taken (a look: nothing changes).
pub fn lost_pending() -> u64 {
    header().map_or(0, |h| h.lost_lines.load(Ordering::Relaxed))
}

pub fn take_lost() -> Option<(u64, i32)> {
    let h = header()?;
    let n = h.lost_lines.swap(0, Ordering::Relaxed);
    (n > 0).then(|| (n, h.lost_errno.load(Ordering::Relaxed) as i32))
}
