//! The memory allocator: glibc's malloc in the supervisor, a bump arena in
//! each worker.
//!
//! Why: a worker is a copy-on-write image of the supervisor. With malloc, its
//! small allocations land in the free chunks the supervisor left scattered
//! over its heap, and every page such a chunk sits on is copied (a page fault
//! and 4 KiB each) the first time the worker writes there: six or more pages
//! per worker for a couple of kilobytes of data. In a worker, allocations are
//! instead carved one after the other out of a fresh anonymous mapping, so a
//! request's few kilobytes dirty one or two pages, and nothing of the
//! supervisor's heap is touched.
//!
//! The arena is a stack: freeing the most recent allocation gives its space
//! back (and `realloc` of it grows in place), other frees are deferred. Each
//! request is bracketed by [`mark`] and [`release`]: when everything
//! allocated since the mark has been freed, the arena winds back to it, so a
//! keep-alive worker serving a thousand requests reuses the same pages.
//! When the arena is full, allocation falls back to malloc.
//!
//! Only a forked worker (single-threaded by construction) ever switches to
//! the arena; until [`enter_worker`] every call goes straight to the system
//! allocator, which keeps the allocator sound in multi-threaded unit tests.
//!
//! Why this module has `unsafe` of its own, outside `sys` (which holds
//! lbaws's other `unsafe`, issue 21): a global allocator is an
//! `unsafe impl GlobalAlloc` that hands out raw memory, the arena is a
//! thread-local `UnsafeCell` and address arithmetic over its reservation,
//! and [`SupervisorTable`] is a vector over a mapping of its own. What
//! makes them sound are the allocator's own invariants (one thread in a
//! worker, no reentrancy, every block within its mapping and handed out
//! once), not a system call's contract that a safe wrapper in `sys` could
//! state; moving them would move the same `unsafe`. Each block says why it
//! holds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};

/// Address space reserved for a worker's arena. Reserved inaccessible
/// (`PROT_NONE`), it costs no commit charge, in the supervisor nor in any
/// fork of it, also under strict overcommit (`vm.overcommit_memory = 2`,
/// where `MAP_NORESERVE` is not honoured and a writable private mapping is
/// charged whole, to every fork). Its first [`COMMIT_STEP`] is writable
/// from the start (charged that much, under strict overcommit), so that a
/// worker makes no system call for it; a worker that needs more makes
/// writable what it uses, a step or more at a time.
const ARENA_SIZE: usize = 64 << 20;
/// The least a worker makes writable of its arena at a time (the first
/// step covers what a request usually allocates).
const COMMIT_STEP: usize = 256 << 10;

pub struct Allocator;

struct Arena {
    start: usize,
    end: usize,
    /// The writable part ends here (`start..committed`).
    committed: usize,
    /// Next free byte.
    next: usize,
    /// Where the current request began, and how many of the arena
    /// allocations made since then are still live.
    mark: usize,
    live_since_mark: usize,
}

// Thread-local, not static: the thread's TLS block is written by fork anyway
// (the new thread id), so keeping the arena's state there dirties no page of
// the executable's data in the worker. Const-initialised, no destructor: safe
// to use from inside the allocator.
thread_local! {
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
    static ARENA: UnsafeCell<Arena> = const {
        UnsafeCell::new(Arena { start: 0, end: 0, committed: 0, next: 0, mark: 0, live_since_mark: 0 })
    };
}

fn in_worker() -> bool {
    IN_WORKER.with(Cell::get)
}

/// Run `f` on the arena. Only called in a worker, which has one thread, and
/// never re-entered (the arena itself allocates nothing).
fn with_arena<R>(f: impl FnOnce(&mut Arena) -> R) -> R {
    // SAFETY: see above: one thread, no reentrancy, no reference escapes `f`.
    ARENA.with(|a| f(unsafe { &mut *a.get() }))
}

/// In a freshly forked worker: serve allocations from a new arena.
pub fn enter_worker() {
    use std::sync::atomic::Ordering::Relaxed;
    let (p, committed) = match RESERVED.load(Relaxed) {
        0 => (map_arena(), 0),
        r => (r as *mut libc::c_void, RESERVED_WRITABLE.load(Relaxed)),
    };
    if p == libc::MAP_FAILED {
        return; // stay on malloc
    }
    with_arena(|a| {
        a.start = p as usize;
        a.end = a.start + ARENA_SIZE;
        a.committed = a.start + committed;
        a.next = a.start;
        a.mark = a.start;
        a.live_since_mark = 0;
    });
    IN_WORKER.with(|w| w.set(true));
}

/// The arena's address space, reserved once by the supervisor (which never
/// touches it) so that a worker need not map its own: inherited
/// inaccessible and with no page in it, it costs a fork nothing, and each
/// worker's writes land in pages of its own.
static RESERVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// How much of it is writable from the start.
static RESERVED_WRITABLE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// In the supervisor, before the first fork.
pub fn reserve_worker_arena() {
    if let Some((p, writable)) = reserve() {
        RESERVED.store(p, std::sync::atomic::Ordering::Relaxed);
        RESERVED_WRITABLE.store(writable, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The arena's address space, and how much of it is writable: the first
/// step, unless that could not be had (then a worker makes it so).
fn reserve() -> Option<(usize, usize)> {
    let p = map_arena();
    if p == libc::MAP_FAILED {
        return None;
    }
    let start = p as usize;
    Some((
        start,
        if commit(start, start + COMMIT_STEP) {
            COMMIT_STEP
        } else {
            0
        },
    ))
}

/// How the arena is reserved: nothing accessible, nothing charged.
const RESERVE_PROT: libc::c_int = libc::PROT_NONE;
const RESERVE_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

fn map_arena() -> *mut libc::c_void {
    // SAFETY: a private anonymous mapping; no existing memory is affected.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ARENA_SIZE,
            RESERVE_PROT,
            RESERVE_FLAGS,
            -1,
            0,
        )
    }
}

/// Make `[from, to)` of the arena's reservation writable (page-aligned).
fn commit(from: usize, to: usize) -> bool {
    // SAFETY: the range lies within the arena's own mapping, which nothing
    // else uses; only its protection changes.
    unsafe {
        libc::mprotect(
            from as *mut libc::c_void,
            to - from,
            libc::PROT_READ | libc::PROT_WRITE,
        ) == 0
    }
}

/// Where a request begins (see [`release`]).
pub fn mark() {
    if in_worker() {
        with_arena(|a| {
            a.mark = a.next;
            a.live_since_mark = 0;
        });
    }
}

/// Where a request ends: give back everything allocated since [`mark`], if all
/// of it has been freed.
pub fn release() {
    if in_worker() {
        with_arena(|a| {
            if a.live_since_mark == 0 {
                a.next = a.mark;
            }
        });
    }
}

impl Arena {
    fn owns(&self, p: usize) -> bool {
        p >= self.start && p < self.end
    }

    /// Whether the arena is writable up to `to`, committing more of it (at
    /// least [`COMMIT_STEP`], and at least as much again as it has) if not.
    fn writable_to(&mut self, to: usize) -> bool {
        if to <= self.committed {
            return true;
        }
        if to > self.end {
            return false;
        }
        let step = COMMIT_STEP.max(self.committed - self.start);
        let want = to.max(self.committed + step).next_multiple_of(COMMIT_STEP);
        let new = want.min(self.end);
        if !commit(self.committed, new) {
            return false;
        }
        self.committed = new;
        true
    }

    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let p = (self.next + layout.align() - 1) & !(layout.align() - 1);
        match p.checked_add(layout.size()) {
            Some(e) if self.writable_to(e) => {
                self.next = e;
                if p >= self.mark {
                    self.live_since_mark += 1;
                }
                p as *mut u8
            }
            _ => std::ptr::null_mut(),
        }
    }

    /// Free an arena allocation (always succeeds: returns true).
    fn free(&mut self, p: usize, size: usize) -> bool {
        if p >= self.mark {
            self.live_since_mark = self.live_since_mark.saturating_sub(1);
        }
        if p + size == self.next && p >= self.mark {
            self.next = p; // the most recent allocation: take it back now
        }
        true
    }
}

// SAFETY: the arena hands out aligned blocks of at least the size asked,
// within its own mapping, none twice while live, to the one thread of a
// worker (see the module's doc); everything else is the system allocator's.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if in_worker() {
            let p = with_arena(|a| a.alloc(layout));
            if !p.is_null() {
                return p;
            }
        }
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_worker()
            && with_arena(|a| a.owns(ptr as usize) && a.free(ptr as usize, layout.size()))
        {
            return;
        }
        // SAFETY: not the arena's, so the system allocator's, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = ptr as usize;
        if in_worker() && with_arena(|a| a.owns(p)) {
            // The most recent allocation grows or shrinks where it is.
            let in_place = with_arena(|a| {
                let fits = p + layout.size() == a.next
                    && p >= a.mark
                    && p.checked_add(new_size).is_some_and(|e| a.writable_to(e));
                if fits {
                    a.next = p + new_size;
                }
                fits
            });
            if in_place {
                return ptr;
            }
            // SAFETY: the layout is valid (same align, non-zero size by contract).
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: the layout just made.
            let q = unsafe { self.alloc(new_layout) };
            if !q.is_null() {
                // SAFETY: both blocks are live and at least this long, and
                // a new block never overlaps a live one.
                unsafe { std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size)) };
                // SAFETY: `ptr` is ours, allocated with `layout`.
                unsafe { self.dealloc(ptr, layout) };
            }
            return q;
        }
        // SAFETY: not the arena's, so the system allocator's, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A fixed-capacity table in memory that forked children do not inherit
/// (`MADV_DONTFORK`): for what only the supervisor uses and writes on every
/// connection (the worker table, the poll set). Not inherited means not
/// shared copy-on-write, so writing it after a fork copies no page, and the
/// worker's memory holds no stale copy of it.
pub struct SupervisorTable<T: Copy> {
    ptr: *mut T,
    cap: usize,
    len: usize,
    bytes: usize,
}

impl<T: Copy> SupervisorTable<T> {
    /// A table of at least `cap` elements; `None` when the memory cannot be
    /// had (the caller refuses what needed it: nothing here may abort the
    /// supervisor).
    pub fn try_with_capacity(cap: usize) -> Option<SupervisorTable<T>> {
        let page = 4096;
        let bytes = cap
            .max(1)
            .checked_mul(std::mem::size_of::<T>())?
            .checked_next_multiple_of(page)?;
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: advice on our own mapping; on failure it is merely inherited.
        unsafe { libc::madvise(p, bytes, libc::MADV_DONTFORK) };
        Some(SupervisorTable {
            ptr: p.cast(),
            cap: bytes / std::mem::size_of::<T>().max(1),
            len: 0,
            bytes,
        })
    }

    /// The same, for tests and start-up paths that treat failure as fatal.
    #[cfg(test)]
    pub fn with_capacity(cap: usize) -> SupervisorTable<T> {
        Self::try_with_capacity(cap).expect("mmap")
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Append; `false` when full.
    pub fn push(&mut self, v: T) -> bool {
        if self.len == self.cap {
            return false;
        }
        // SAFETY: within the mapping.
        unsafe { self.ptr.add(self.len).write(v) };
        self.len += 1;
        true
    }

    pub fn swap_remove(&mut self, i: usize) -> T {
        let s = self.as_mut_slice();
        let last = s.len() - 1;
        s.swap(i, last);
        self.len -= 1;
        // SAFETY: index `len` was initialised a moment ago.
        unsafe { self.ptr.add(self.len).read() }
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Remove and return the last element.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: index `len` was initialised.
        Some(unsafe { self.ptr.add(self.len).read() })
    }

    /// The whole capacity past the initialised elements, to be written
    /// (e.g. by `recv`) before it is read.
    pub fn spare(&mut self) -> &mut [std::mem::MaybeUninit<T>] {
        // SAFETY: within the mapping; MaybeUninit makes no claim about contents.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(self.len).cast(), self.cap - self.len)
        }
    }
}

impl<T: Copy> Drop for SupervisorTable<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer referenced.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arena's bookkeeping, on an arena of its own (the global one is
    /// only switched on in a forked worker).
    #[test]
    fn stack_discipline_and_marks() {
        let mut buf = vec![0u8; 4096];
        let start = buf.as_mut_ptr() as usize;
        let mut a = Arena {
            start,
            end: start + 4096,
            committed: start + 4096,
            next: start,
            mark: start,
            live_since_mark: 0,
        };
        let l = |n| Layout::from_size_align(n, 8).unwrap();
        let conn = a.alloc(l(100)) as usize; // lives across requests
        a.mark = a.next;
        a.live_since_mark = 0;
        let x = a.alloc(l(64)) as usize;
        let y = a.alloc(l(64)) as usize;
        assert_eq!(y, x + 64);
        a.free(x, 64); // not the last: deferred
        assert_eq!(a.next, y + 64);
        a.free(y, 64); // the last: given back
        assert_eq!(a.next, y);
        assert_eq!(a.live_since_mark, 0);
        a.next = a.mark; // release()
        assert_eq!(
            a.alloc(l(8)) as usize,
            x,
            "the next request reuses the same memory"
        );
        assert!(conn < x);
        assert!(a.alloc(l(8192)).is_null(), "full: fall back to malloc");
    }

    /// The reservation is inaccessible and charged nothing (`PROT_NONE`,
    /// `MAP_NORESERVE`); a worker makes writable what it uses, a step at a
    /// time, and no more.
    #[test]
    fn the_reservation_costs_no_commit_and_grows_by_steps() {
        assert_eq!(RESERVE_PROT, libc::PROT_NONE);
        assert_ne!(RESERVE_FLAGS & libc::MAP_NORESERVE, 0);
        let p = map_arena();
        assert_ne!(p, libc::MAP_FAILED);
        let start = p as usize;
        let mut a = Arena {
            start,
            end: start + ARENA_SIZE,
            committed: start,
            next: start,
            mark: start,
            live_since_mark: 0,
        };
        // The protection of the mapping that holds `addr` (a neighbour of
        // the same kind may have merged with it: only the address counts).
        let prot_at = |addr: usize| {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let line = maps
                .lines()
                .find(|l| {
                    let (range, _) = l.split_once(' ').unwrap();
                    let (lo, hi) = range.split_once('-').unwrap();
                    let lo = usize::from_str_radix(lo, 16).unwrap();
                    let hi = usize::from_str_radix(hi, 16).unwrap();
                    lo <= addr && addr < hi
                })
                .unwrap_or_else(|| panic!("{addr:x} not mapped:\n{maps}"));
            line.split_whitespace().nth(1).unwrap().to_string()
        };
        assert_eq!(prot_at(start), "---p");
        assert_eq!(prot_at(start + ARENA_SIZE - 1), "---p");
        let l = |n| Layout::from_size_align(n, 8).unwrap();
        let x = a.alloc(l(100));
        assert_eq!(x as usize, start);
        // SAFETY: just allocated, 100 bytes.
        unsafe { x.write_bytes(1, 100) };
        assert_eq!(a.committed, start + COMMIT_STEP);
        assert_eq!(prot_at(start + COMMIT_STEP - 1), "rw-p");
        assert_eq!(prot_at(start + COMMIT_STEP), "---p");
        // A bigger one: the writable part grows, contiguous.
        let y = a.alloc(l(COMMIT_STEP * 3));
        assert!(!y.is_null());
        // SAFETY: just allocated.
        unsafe { y.add(COMMIT_STEP * 3 - 1).write(2) };
        assert!(a.committed >= y as usize + COMMIT_STEP * 3 && a.committed < start + ARENA_SIZE);
        assert!(a.alloc(l(ARENA_SIZE)).is_null(), "past the end: malloc");
        // SAFETY: our own mapping, no longer used.
        unsafe { libc::munmap(p, ARENA_SIZE) };
        // The supervisor's reservation: its first step writable already.
        let (r, writable) = reserve().unwrap();
        assert_eq!(writable, COMMIT_STEP);
        assert_eq!(prot_at(r), "rw-p");
        assert_eq!(prot_at(r + COMMIT_STEP - 1), "rw-p");
        assert_eq!(prot_at(r + COMMIT_STEP), "---p");
        assert_eq!(prot_at(r + ARENA_SIZE - 1), "---p");
        // SAFETY: as above.
        unsafe { libc::munmap(r as *mut libc::c_void, ARENA_SIZE) };
    }

    #[test]
    fn supervisor_table() {
        let mut t: SupervisorTable<(u32, u64)> = SupervisorTable::with_capacity(3);
        assert!(t.capacity() >= 3);
        for i in 0..3 {
            assert!(t.push((i, 10 * i as u64)));
        }
        assert_eq!(t.swap_remove(0), (0, 0));
        assert_eq!(t.as_slice(), &[(2, 20), (1, 10)]);
        t.clear();
        assert!(t.is_empty());
    }
}
