//! Memory shared with other processes: a file (a memfd) mapped
//! `MAP_SHARED`, never unmapped, and typed views into it of [`Shared`]
//! types only, those made of integer atomics, which any process may write
//! at any moment. The scoreboard (`crate::scoreboard`) is its one user.

use nix::errno::Errno;
use std::mem::{align_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// A type whose values may live in memory that other processes write:
/// every bit pattern (all zeroes included) is a valid value, and all access
/// goes through atomics, so a write by another process at any moment is
/// neither a data race nor an invalid value.
///
/// # Safety
/// Implement it only for types made of integer atomics: the impls below,
/// and structs whose every field is `Shared`, which [`shared_struct!`]
/// checks before it implements it.
pub unsafe trait Shared: Sync {}

// SAFETY: integer atomics: any bits are a valid value, all access atomic.
unsafe impl Shared for AtomicU64 {}
// SAFETY: as above.
unsafe impl Shared for AtomicU32 {}
// SAFETY: an array of `Shared` values is one, element by element.
unsafe impl<T: Shared, const N: usize> Shared for [T; N] {}

/// Compiles only for a [`Shared`] `T` ([`shared_struct!`]'s check).
pub const fn assert_shared<T: Shared>() {}

/// Define a struct whose fields are all [`Shared`] (a field of another
/// type does not compile), and implement [`Shared`] for it. Its layout is
/// the caller's: `#[repr(C)]` where other builds map the same memory.
macro_rules! shared_struct {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fattr:meta])*
                $fvis:vis $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        $vis struct $name {
            $(
                $(#[$fattr])*
                $fvis $field: $ty,
            )*
        }
        const _: () = {
            $($crate::sys::shared::assert_shared::<$ty>();)*
        };
        // SAFETY: every field is `Shared` (checked just above at compile
        // time), so every bit pattern is a valid value and all access is
        // atomic; padding bytes are never read.
        unsafe impl $crate::sys::shared::Shared for $name {}
    };
}
pub(crate) use shared_struct;

/// A shared mapping of a file, read and write, that is never unmapped: it
/// lives as long as the process, and its forks inherit it.
#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    base: usize,
    len: usize,
}

impl Mapping {
    /// `mmap(MAP_SHARED | MAP_NORESERVE)` of the first `len` bytes of `fd`,
    /// read and write (zero-filled where never written).
    ///
    /// Checks that the file holds `len` bytes now (`EINVAL` if not), so
    /// that no byte of the mapping lies past its end. Trusts its caller
    /// that nothing shrinks the file later (a touch past the end would be
    /// a `SIGBUS`): a memfd that only lbaws's processes hold.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> Result<Mapping, Errno> {
        if (nix::sys::stat::fstat(fd)?.st_size as u64) < len as u64 {
            return Err(Errno::EINVAL);
        }
        // SAFETY: a new mapping at an address the kernel picks: it replaces
        // nothing of this process's.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Mapping {
            base: p as usize,
            len,
        })
    }

    /// The `T` at `offset` bytes into the mapping; `None` where it would
    /// not lie wholly within it, or would not be aligned for `T`.
    pub fn get<T: Shared>(&self, offset: usize) -> Option<&'static T> {
        let end = offset.checked_add(size_of::<T>())?;
        let at = self.base.checked_add(offset)?;
        if end > self.len || at % align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: within the mapping and aligned (both checked), which is
        // never unmapped (valid for 'static); `T: Shared`, so whatever
        // bits are there are a valid `T`, and every access to it, by this
        // process or another, is atomic.
        Some(unsafe { &*(at as *const T) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_view_lies_within_the_mapping_and_is_aligned() {
        let fd =
            nix::sys::memfd::memfd_create(c"test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        assert_eq!(Mapping::new(fd.as_fd(), 8192).unwrap_err(), Errno::EINVAL);
        let m = Mapping::new(fd.as_fd(), 4096).unwrap();
        let last = m.get::<AtomicU64>(4088).unwrap();
        assert_eq!(last.load(Ordering::Relaxed), 0, "zero-filled");
        last.store(7, Ordering::Relaxed);
        assert_eq!(m.get::<AtomicU64>(4088).unwrap().load(Ordering::Relaxed), 7);
        assert!(m.get::<AtomicU64>(4092).is_none(), "past the end");
        assert!(m.get::<AtomicU64>(usize::MAX).is_none(), "overflow");
        assert!(m.get::<AtomicU64>(4).is_none(), "misaligned");
        assert!(m.get::<[AtomicU32; 2]>(4).is_some(), "aligned for u32");
    }
}
