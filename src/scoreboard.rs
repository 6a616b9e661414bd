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
//!   supervisor reports.
//!
//! The mapping is reserved for every possible slot (`MAX_PROCESSES`) but
//! only pages that hold live slots are ever touched; a fork copies none of
//! it (shared mappings are faulted in, not copied). A worker writes only its
//! own slot and the header's counters, with atomics; the supervisor reads.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[repr(C)]
struct Header {
    /// Access-log lines not written (whole), and the last error's errno.
    lost_lines: AtomicU64,
    lost_errno: AtomicU32,
    /// A line was cut short and could not be taken back: the next writer
    /// starts with a newline, so the fragment stands on a line of its own.
    cut: AtomicU32,
    _room: [u64; 6],
}

#[repr(C)]
struct Slot {
    /// CLOCK_MONOTONIC, milliseconds, of the worker's last progress.
    progress_ms: AtomicU64,
    /// The system call the worker's seccomp filter refused it, + 1 (0: none).
    denied: AtomicU64,
}

const HEADER: usize = 64;

/// The mapping's address (0: none yet).
static BASE: AtomicUsize = AtomicUsize::new(0);
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
    let bytes = HEADER + slots * std::mem::size_of::<Slot>();
    let Ok(fd) = memfd_create(c"lbaws-scoreboard", MFdFlags::MFD_CLOEXEC) else {
        return false;
    };
    if nix::unistd::ftruncate(&fd, bytes as i64).is_err() {
        return false;
    }
    map(std::os::fd::IntoRawFd::into_raw_fd(fd), slots)
}

/// In an image started by an upgrade in place: the scoreboard the previous
/// image made (and its workers still write to), from its memfd.
pub fn adopt(fd: std::os::fd::RawFd) -> bool {
    let Ok(st) = nix::sys::stat::fstat(
        // SAFETY: borrowed for the call; the descriptor was handed over open.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
    ) else {
        return false;
    };
    let slots = (st.st_size as usize).saturating_sub(HEADER) / std::mem::size_of::<Slot>();
    let _ = nix::fcntl::fcntl(
        // SAFETY: as above.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    map(fd, slots)
}

/// The memfd behind the scoreboard, for an upgrade in place.
pub fn fd() -> std::os::fd::RawFd {
    FD.load(Ordering::Relaxed)
}

fn map(fd: std::os::fd::RawFd, slots: usize) -> bool {
    let bytes = HEADER + slots * std::mem::size_of::<Slot>();
    // SAFETY: a shared mapping of our own memfd; zero-filled where never
    // written, which is a valid state for every atomic in it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        // SAFETY: ours, unused.
        unsafe { libc::close(fd) };
        return false;
    }
    FD.store(fd, Ordering::Relaxed);
    SLOTS.store(slots, Ordering::Relaxed);
    BASE.store(p as usize, Ordering::Relaxed);
    true
}

fn header() -> Option<&'static Header> {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: the mapping lives as long as the process and starts with a Header.
    (base != 0).then(|| unsafe { &*(base as *const Header) })
}

fn slot(i: usize) -> Option<&'static Slot> {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 || i >= SLOTS.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: within the mapping; zero or written by our atomics only.
    Some(unsafe { &*((base + HEADER + i * std::mem::size_of::<Slot>()) as *const Slot) })
}

/// Milliseconds of CLOCK_MONOTONIC (coarse: a tick's precision, no system
/// call).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// In the supervisor, before it forks a worker for slot `i`: a fresh start.
pub fn assign(i: usize) {
    if let Some(s) = slot(i) {
        s.progress_ms.store(now_ms(), Ordering::Relaxed);
        s.denied.store(0, Ordering::Relaxed);
    }
}

/// In a worker: this slot is mine.
pub fn enter(i: usize) {
    MINE.with(|m| m.set(i + 1));
    progress();
}

/// In a worker: something moved. Cheap enough for every read and write.
pub fn progress() {
    let i = MINE.with(std::cell::Cell::get);
    if i > 0 {
        if let Some(s) = slot(i - 1) {
            s.progress_ms.store(now_ms(), Ordering::Relaxed);
        }
    }
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
pub fn take_lost() -> Option<(u64, i32)> {
    let h = header()?;
    let n = h.lost_lines.swap(0, Ordering::Relaxed);
    (n > 0).then(|| (n, h.lost_errno.load(Ordering::Relaxed) as i32))
}
