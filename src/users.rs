//! User and group names to ids.
//!
//! lbaws is a static executable (see `.cargo/config.toml`), and a static
//! glibc cannot load the NSS modules a system may name in nsswitch.conf
//! (systemd, LDAP, sss): it would crash trying. So names are resolved the
//! way the system itself resolves them, by asking `getent` (always present:
//! Debian's libc-bin is essential), and only where that cannot run, by
//! reading /etc/passwd and /etc/group. This happens while validating a
//! configuration, never per connection.

use std::process::{Command, Stdio};

/// (uid, primary gid) of a user.
pub fn user(name: &str) -> Option<(u32, u32)> {
    let f = lookup("passwd", name, "/etc/passwd")?;
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

/// gid of a group.
pub fn group(name: &str) -> Option<u32> {
    lookup("group", name, "/etc/group")?.get(2)?.parse().ok()
}

/// The colon-separated fields of `name`'s entry in database `db`.
fn lookup(db: &str, name: &str, file: &str) -> Option<Vec<String>> {
    if name.is_empty() || name.contains([':', '\n', '\0']) {
        return None;
    }
    let entry = match Command::new("getent")
        .args([db, "--", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        // 0: found; 2: no such entry.
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).ok()?,
        Ok(out) if out.status.code() == Some(2) => return None,
        // getent missing or broken: the files alone.
        _ => std::fs::read_to_string(file)
            .ok()?
            .lines()
            .find(|l| l.split(':').next() == Some(name))?
            .to_string(),
    };
    let fields: Vec<String> = entry.lines().next()?.split(':').map(String::from).collect();
    (fields.first().map(String::as_str) == Some(name)).then_some(fields)
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_and_unknown() {
        assert_eq!(super::user("root"), Some((0, 0)));
        assert_eq!(super::group("root"), Some(0));
        assert_eq!(super::user("no-such-user-lbaws"), None);
        assert_eq!(super::group("no:such"), None);
    }
}
