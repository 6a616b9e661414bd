//! The upgrade record's bytes: little-endian integers, length-prefixed
//! bytes, a flag byte before what may be missing. Written and read by lbaws
//! itself, across one `execve`; read with bounds all the same.

use crate::handoff::{Meta, META_LEN};
use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Sanity bound for a count in a record.
const MAX_ITEMS: u32 = 1 << 22;

pub(super) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub fn flag(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }

    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn fd(&mut self, fd: RawFd) {
        self.u32(fd as u32);
    }

    pub fn count(&mut self, n: usize) {
        self.u32(n as u32);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.0.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn path(&mut self, p: &Path) {
        self.bytes(p.as_os_str().as_bytes());
    }

    /// A flag, then `v` written by `put` if it is there.
    pub fn opt<T>(&mut self, v: Option<&T>, put: impl FnOnce(&mut Self, &T)) {
        self.flag(v.is_some());
        if let Some(v) = v {
            put(self, v);
        }
    }

    pub fn meta(&mut self, m: &Meta) {
        let at = self.0.len();
        self.0.resize(at + META_LEN, 0);
        m.encode(&mut self.0[at..]);
    }
}

pub(super) struct Reader<'a> {
    pub b: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or("the upgrade record is cut short")?;
        self.at += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub fn flag(&mut self) -> Result<bool, String> {
        Ok(self.u8()? != 0)
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    pub fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().expect("16")))
    }

    pub fn fd(&mut self) -> Result<RawFd, String> {
        Ok(self.u32()? as i32)
    }

    pub fn count(&mut self) -> Result<u32, String> {
        let n = self.u32()?;
        if n > MAX_ITEMS {
            return Err(format!("the upgrade record lists {n} items"));
        }
        Ok(n)
    }

    /// `count` items, each read by `get`.
    pub fn list<T>(
        &mut self,
        mut get: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let n = self.count()?;
        let mut v = Vec::with_capacity(n as usize);
        for _ in 0..n {
            v.push(get(self)?);
        }
        Ok(v)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| "a text in the upgrade record is not UTF-8".into())
    }

    pub fn path(&mut self) -> Result<PathBuf, String> {
        Ok(PathBuf::from(OsStr::from_bytes(self.bytes()?)))
    }

    /// What [`Writer::opt`] wrote.
    pub fn opt<T>(
        &mut self,
        get: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.flag()? {
            true => get(self).map(Some),
            false => Ok(None),
        }
    }

    pub fn meta(&mut self) -> Result<Meta, String> {
        Meta::decode(self.take(META_LEN)?).ok_or_else(|| "a bad connection record".into())
    }
}
