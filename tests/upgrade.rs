//! Upgrade in place (SIGUSR2): lbaws runs the binary at the path it was
//! started from (here a copy, replaced the way a package upgrade replaces
//! it) in check mode, then re-executes it with the same pid. A download in
//! flight, a parked keep-alive connection and a half-sent head all go on
//! across it; a failed check changes nothing.

mod util;

use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use util::*;

const BIG: usize = 8 << 20;

/// One test at a time: a copy of the binary being written while another
/// thread of this test process forks would make its exec fail (ETXTBSY).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const CONFIG: &str = r#"
[[listen]]
address = "127.0.0.1:0"

[log]
level = "debug"

[limits]
park_after = "50ms"

[[route]]
prefix = "/big"
static = { root = "{dir}/www" }

[[route]]
prefix = "/"
respond = { status = 200, body = "Hello, World!\n", content_type = "text/plain" }
"#;

/// A copy of the binary in a directory of its own: what the daemon runs,
/// and what the test replaces.
fn binary_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("lbaws");
    std::fs::copy(BIN, &bin).unwrap();
    (dir, bin)
}

/// Replace the file as dpkg does: a new file renamed over the old one.
fn replace(bin: &Path) {
    let new = bin.with_extension("new");
    std::fs::copy(BIN, &new).unwrap();
    std::fs::rename(&new, bin).unwrap();
}

fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn big_file(d: &Daemon) -> Vec<u8> {
    let body: Vec<u8> = (0..BIG as u32).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::create_dir_all(d.path("www")).unwrap();
    std::fs::write(d.path("www/file.bin"), &body).unwrap();
    body
}

#[test]
fn sigusr2_replaces_the_image_and_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bindir, bin) = binary_copy();
    let notify_dir = tempfile::tempdir().unwrap();
    let sock = notify_dir.path().join("notify.sock");
    let mut mgr = Manager::bind(&sock);
    let mut d = Daemon::with_config(CONFIG)
        .dirs(&["www"])
        .binary(&bin)
        .env("NOTIFY_SOCKET", sock.to_str().unwrap())
        .start();
    mgr.expect(&["READY=1"]);
    let body = big_file(&d);
    let addr = d.addr();

    // A download in flight: its head and a first piece read, the rest
    // waiting in the worker (blocked on a full socket buffer).
    let mut download = connect(addr);
    download
        .write_all(b"GET /big/file.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = vec![0u8; 64 << 10];
    download.read_exact(&mut got).unwrap();
    // A keep-alive connection, parked in the gate once idle.
    let mut parked = Client::new(addr);
    assert_eq!(parked.get("/").status, 200);
    // A head half sent, waiting in the gate.
    let mut half = connect(addr);
    half.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    // The download's worker only (the keep-alive one has parked).
    assert!(wait_for(DEADLINE, || d.children().len() == 1));

    replace(&bin);
    assert!(exe_of(d.pid).ends_with(" (deleted)"), "{}", exe_of(d.pid));
    let pid = d.pid;
    d.signal(Signal::SIGUSR2);
    mgr.expect(&["RELOADING=1"]);
    let ready = mgr.expect(&["READY=1"]);
    assert!(
        ready.contains(&format!("STATUS=lbaws {}: ", env!("CARGO_PKG_VERSION"))),
        "{ready}"
    );
    d.wait_log("upgraded in place from");
    assert_eq!(d.count_log("info: ready:"), 2, "{}", d.logs());
    assert!(d.alive());
    assert_eq!(d.pid, pid);
    assert_eq!(exe_of(pid), bin.to_str().unwrap(), "the new file runs");
    assert!(
        d.logs().contains("1 worker(s), 2 connection(s)"),
        "{}",
        d.logs()
    );

    // Everything goes on: the half head, the parked connection, the download.
    half.write_all(b"Connection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut half).status, 200);
    assert_eq!(parked.get("/").status, 200);
    download.read_to_end(&mut got).unwrap();
    let start = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - start, BIG, "the whole download");
    assert!(got[start..] == body[..], "the download intact");
    // The old worker is reaped by the new image, as a normal end.
    drop(download);
    d.wait_no_workers();
    assert_eq!(get(addr, "/").status, 200);
    let logs = d.logs();
    for bad in ["killed by", "exited with code", "stray", "lost", "error:"] {
        assert!(!logs.contains(bad), "{bad:?} in\n{logs}");
    }
}

#[test]
fn a_failed_check_refuses_the_upgrade_and_keeps_serving() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bindir, bin) = binary_copy();
    let mut d = Daemon::with_config(CONFIG).binary(&bin).start();
    let addr = d.addr();
    let good = std::fs::read_to_string(d.path("config.toml")).unwrap();

    // A broken configuration: refused with its location, nothing changes.
    let broken = good.replace("park_after", "bogus");
    std::fs::write(d.path("config.toml"), broken).unwrap();
    d.signal(Signal::SIGUSR2);
    d.wait_log("upgrade refused:");
    let logs = d.logs();
    assert!(logs.contains("config.toml:"), "{logs}");
    assert!(logs.contains("the running version keeps serving"), "{logs}");
    assert_eq!(get(addr, "/").status, 200);

    // A file that cannot run: refused too.
    std::fs::write(d.path("config.toml"), &good).unwrap();
    let junk = bin.with_extension("junk");
    std::fs::write(&junk, b"not a program").unwrap();
    std::fs::rename(&junk, &bin).unwrap();
    d.signal(Signal::SIGUSR2);
    assert!(wait_for(DEADLINE, || d.count_log("upgrade refused:") == 2));
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(d.count_log("info: ready:"), 1, "still the first image");

    // Once the file is good again, the upgrade goes through.
    replace(&bin);
    d.signal(Signal::SIGUSR2);
    d.wait_log("upgraded in place from");
    assert_eq!(get(addr, "/").status, 200);
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(DEADLINE).success());
}

#[test]
fn an_upgrade_keeps_systemds_sockets_and_their_names() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let listener = loopback_listener();
    let addr = listener.local_addr().unwrap();
    let config = r#"
[[listen]]
address = "127.0.0.1:1"   # not bound: socket-activated lbaws binds nothing
name = "web"

[[route]]
prefix = "/"
respond = { status = 200, body = "activated\n" }
"#;
    let mut d = Daemon::with_config(config)
        .listener(listener)
        .wrapper(&["systemd-socket-activate", "--fdname=web"])
        .no_wait()
        .start();
    assert!(wait_for(DEADLINE, || std::net::TcpStream::connect(addr).is_ok()));
    assert_eq!(get(addr, "/").body_str(), "activated\n");
    d.wait_log("info: ready:");
    d.signal(Signal::SIGUSR2);
    d.wait_log("upgraded in place from");
    assert!(wait_for(DEADLINE, || d.count_log("info: ready:") == 2));
    assert_eq!(get(addr, "/").body_str(), "activated\n");
    let logs = d.logs();
    assert_eq!(
        logs.matches(&format!("listening on {addr} (web) [from systemd]"))
            .count(),
        2,
        "{logs}"
    );
    assert!(
        !logs.contains("127.0.0.1:1 "),
        "bound the config address:\n{logs}"
    );
    // Every descriptor but 0-2 is close-on-exec again in the new image.
    for (fd, flags) in d.fd_flags() {
        assert!(
            fd <= 2 || flags & 0o2000000 != 0,
            "fd {fd} not close-on-exec"
        );
    }
}

/// A stand-in for the next version, put at `bin` the way dpkg replaces a
/// file: a script that runs the real binary. Its first run is the upgrade's
/// check, after which `after_check` runs; its second is the exec, before
/// which `before_exec` runs (shell commands; empty: nothing).
fn stand_in(bin: &Path, after_check: &str, before_exec: &str) {
    let runs = bin.with_extension("runs");
    let or_nothing = |s: &str| {
        if s.is_empty() {
            ":".to_string()
        } else {
            s.to_string()
        }
    };
    let (after_check, before_exec) = (or_nothing(after_check), or_nothing(before_exec));
    let runs = runs.display();
    put_script(
        bin,
        &format!(
            "#!/bin/sh\n\
             n=$(cat {runs} 2>/dev/null || echo 0)\n\
             echo $((n + 1)) >{runs}\n\
             if [ \"$n\" = 0 ]; then\n\
             \t{BIN} \"$@\"\n\
             \tcode=$?\n\
             \t{after_check}\n\
             \texit $code\n\
             fi\n\
             {before_exec}\n\
             exec {BIN} \"$@\"\n"
        ),
    );
}

/// `text` as an executable file renamed over `path`.
fn put_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// The kernel's count of the seccomp filters a process runs under (`None`
/// where /proc/PID/status does not say).
fn seccomp_filters(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn upgrades_in_a_row_attach_the_shared_filter_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bindir, bin) = binary_copy();
    let d = Daemon::with_config(CONFIG)
        .dirs(&["www"])
        .binary(&bin)
        .start();
    let Some(first) = seccomp_filters(d.pid) else {
        skip_or_fail("this kernel does not say Seccomp_filters in /proc/PID/status");
        return;
    };
    assert_eq!(first, 1, "the shared filter, once:\n{}", d.logs());
    for n in 1..=3 {
        replace(&bin);
        d.signal(Signal::SIGUSR2);
        assert!(
            wait_for(DEADLINE, || d.count_log("upgraded in place from") == n),
            "{}",
            d.logs()
        );
        assert_eq!(seccomp_filters(d.pid), Some(1), "after upgrade {n}");
    }
    // What the last image forks inherits the same one filter.
    let gate = d.wait_gate();
    assert_eq!(seccomp_filters(gate), Some(1), "the gate");
    assert_eq!(get(d.addr(), "/").status, 200);
    let logs = d.logs();
    assert!(!logs.contains("error:"), "{logs}");
}

#[test]
fn two_upgrades_within_a_watchdog_interval_ping_across_each_exec() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bindir, bin) = binary_copy();
    let notify_dir = tempfile::tempdir().unwrap();
    let sock = notify_dir.path().join("notify.sock");
    let mut mgr = Manager::bind(&sock);
    // An interval the test never waits out: every WATCHDOG=1 seen is one
    // an upgrade sent, not the regular ping (at half the interval). Both
    // upgrades happen well within one interval.
    let d = Daemon::with_config(CONFIG)
        .dirs(&["www"])
        .binary(&bin)
        .env("NOTIFY_SOCKET", sock.to_str().unwrap())
        .env("WATCHDOG_USEC", "120000000")
        .start();
    let ready = mgr.expect(&["READY=1"]);
    assert!(ready.lines().any(|l| l == "WATCHDOG=1"), "{ready}");
    for n in 1..=2 {
        replace(&bin);
        d.signal(Signal::SIGUSR2);
        mgr.expect(&["RELOADING=1"]);
        // Up to the new image's READY=1: the old image pinged right before
        // its exec, the new one as soon as it ran, and READY=1 pings too.
        let seen = mgr.until(&["READY=1"]);
        let pings = seen
            .iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count();
        assert!(pings >= 3, "upgrade {n}: {seen:?}");
        let ready = seen.last().unwrap();
        assert!(ready.lines().any(|l| l == "WATCHDOG=1"), "{ready}");
        assert!(wait_for(DEADLINE, || d.count_log("upgraded in place from") == n));
    }
    assert_eq!(get(d.addr(), "/").status, 200);
}

#[test]
fn the_configuration_checked_is_the_one_the_new_image_runs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bindir, bin) = binary_copy();
    let mut d = Daemon::with_config(CONFIG)
        .dirs(&["www"])
        .binary(&bin)
        .start();
    let addr = d.addr();
    let cfg = d.path("config.toml");
    let next = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("Hello, World!", "Hello again!");
    std::fs::write(&cfg, &next).unwrap();
    // An edit that races the upgrade: the file breaks right after the
    // new version's check passed, before the exec.
    stand_in(&bin, &format!("printf 'bogus\\n' >>{}", cfg.display()), "");
    let pid = d.pid;
    d.signal(Signal::SIGUSR2);
    d.wait_log("upgraded in place from");
    assert!(d.alive());
    assert_eq!(d.pid, pid);
    assert_eq!(
        get(addr, "/").body_str(),
        "Hello again!\n",
        "what was checked"
    );
    // The file as it is now: a reload refuses it and keeps what runs.
    d.signal(Signal::SIGHUP);
    d.wait_log("reload failed");
    assert!(d.logs().contains("config.toml:"), "{}", d.logs());
    assert_eq!(get(addr, "/").body_str(), "Hello again!\n");
}

#[test]
fn a_next_version_that_rejects_a_flag_is_refused_before_the_exec() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (dir, bin) = binary_copy();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[[listen]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\nprefix = \"/\"\nrespond = { status = 200, body = \"running\\n\" }\n",
    )
    .unwrap();
    let sock = dir.path().join("notify.sock");
    let mut mgr = Manager::bind(&sock);
    let pid_file = dir.path().join("lbaws.pid");
    let out = std::process::Command::new(&bin)
        .arg("--daemon")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--config")
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    mgr.expect(&["READY=1"]);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _guard = KillOnDrop(pid);
    let addr = wait_tcp_listen_addr(pid);
    assert_eq!(get(addr, "/").body_str(), "running\n");

    // The next version renamed --daemon: it refuses to start with it.
    put_script(
        &bin,
        &format!(
            "#!/bin/sh\n\
             for a; do\n\
             \tif [ \"$a\" = --daemon ]; then echo \"lbaws: unknown option '--daemon'\" >&2; exit 64; fi\n\
             done\n\
             exec {BIN} \"$@\"\n"
        ),
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR2).unwrap();
    mgr.expect(&["RELOADING=1"]);
    let ready = mgr.expect(&["READY=1"]);
    assert!(ready.contains("upgrade refused"), "{ready}");
    assert!(ready.contains("unknown option '--daemon'"), "{ready}");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(get(addr, "/").body_str(), "running\n");
}

#[test]
fn a_take_over_that_fails_after_the_exec_falls_back_to_the_version_before() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_bindir, bin) = binary_copy();
    let mut d = Daemon::with_config(CONFIG)
        .dirs(&["www", "cgi", "spool"])
        .binary(&bin)
        .start();
    let addr = d.addr();
    let cfg = d.path("config.toml");
    let before = std::fs::read_to_string(&cfg).unwrap();
    // The next configuration has CGI request bodies go to spool/, which
    // is taken away between the check and the exec.
    let spool = d.path("spool");
    let next = format!(
        "[server]\ntemp_dir = \"{}\"\n{}\n[[route]]\nprefix = \"/cgi/\"\ncgi = {{ dir = \"{}\" }}\n",
        spool.display(),
        before.replace("Hello, World!", "Hello again!"),
        d.path("cgi").display()
    );
    std::fs::write(&cfg, &next).unwrap();
    stand_in(&bin, "", &format!("rmdir {}", spool.display()));
    let pid = d.pid;
    d.signal(Signal::SIGUSR2);
    d.wait_log("upgrade failed:");
    assert!(d.alive(), "{}", d.logs());
    assert_eq!(d.pid, pid);
    // The version before, with the configuration that ran before.
    assert_eq!(get(addr, "/").body_str(), "Hello, World!\n");
    let logs = d.logs();
    assert!(logs.contains("no such directory"), "{logs}");
    assert!(
        logs.contains("with the configuration that ran before"),
        "{logs}"
    );
    assert_eq!(d.count_log("info: ready:"), 2, "{logs}");
    assert!(!logs.contains("upgraded in place from"), "{logs}");

    // Once spool/ is back, the upgrade goes through.
    std::fs::create_dir(&spool).unwrap();
    replace(&bin);
    d.signal(Signal::SIGUSR2);
    d.wait_log("upgraded in place from");
    assert_eq!(get(addr, "/").body_str(), "Hello again!\n");
}
