//! The failures the fork-per-connection article demonstrates, each as a test:
//! zombies, lost SIGCHLDs, EINTR, leaked duplicate descriptors, EMFILE, fork
//! failing with EAGAIN; plus the concurrency cap and abnormal-exit logging.
//! (Fork failure itself is in `privileges.rs`: it needs RLIMIT_NPROC as a
//! non-root user.)

mod util;

use nix::sys::signal::Signal;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use util::*;

#[test]
fn many_simultaneous_clients_leave_no_zombie() {
    let d = Daemon::hello("");
    let addr = d.addr();
    let n = 128;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                // The article's test: every client from one host.
                let mut s = connect(addr);
                b.wait(); // all connected: the daemon now has 128 to accept at once
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .unwrap();
                read_response(&mut s)
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), "Hello, World!\n");
    }
    // Every worker is reaped: no child left, zombie or not.
    d.wait_no_workers();
}

#[test]
fn sequential_connections_leak_no_descriptor_and_close_promptly() {
    let d = Daemon::hello("");
    let addr = d.addr();
    let before = d.fd_count();
    for _ in 0..1000 {
        // read_response reads to EOF with a timeout: a copy of the connection
        // left open in the supervisor would hold the client here until it fails.
        let r = get(addr, "/");
        assert_eq!(r.status, 200);
    }
    d.wait_no_workers();
    assert_eq!(
        d.fd_count(),
        before,
        "descriptors: before {before}, after {}",
        d.fd_count()
    );
}

#[test]
fn sigchld_storm_is_harmless() {
    let mut d = Daemon::hello("");
    let addr = d.addr();
    // Signals while the supervisor sleeps in poll, and while it is busy accepting.
    for round in 0..20 {
        for _ in 0..100 {
            d.signal(Signal::SIGCHLD);
        }
        assert_eq!(get(addr, "/").status, 200, "round {round}");
    }
    assert!(d.alive(), "log:\n{}", d.logs());
    assert!(!d.logs().contains("error:"), "log:\n{}", d.logs());
    d.wait_no_workers();
}

#[test]
fn low_nofile_limit_with_many_held_connections() {
    // 300 connections that sent half a head, against a 256-descriptor
    // limit: they wait in the gate, which holds at most max_pending (sized
    // from the limit) and makes room by closing the oldest; the supervisor
    // keeps no copy of any, and a complete request is still served.
    let mut d = Daemon::with_config(&format!(
        "[limits]\nheader_timeout = \"60s\"\n{}",
        hello_routes()
    ))
    .nofile(256)
    .start();
    d.wait_log("max_pending 192");
    let addr = d.addr();
    let before = d.fd_count();
    let held: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = connect_from(source(i % 10), addr);
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
            s
        })
        .collect();
    // Every one of them reached the gate, or was closed to make room.
    let gate = d.wait_gate();
    let gate_fds = || std::fs::read_dir(format!("/proc/{gate}/fd")).map_or(0, |r| r.count());
    assert!(wait_for(DEADLINE, || gate_fds() >= 192));
    assert!(
        gate_fds() < 256,
        "the gate stays under its limit: {}",
        gate_fds()
    );
    assert_eq!(get(addr, "/").status, 200);
    assert!(d.alive() && d.gate() == Some(gate), "log:\n{}", d.logs());
    // The GET's worker ends; none is left for a half head (one would wait
    // for the rest of its head for a minute).
    d.wait_no_workers();
    assert_eq!(d.fd_count(), before, "the supervisor holds none of them");
    drop(held);
    assert!(wait_for(DEADLINE, || gate_fds() < 16));
    assert_eq!(get(addr, "/").status, 200);
    assert!(d.alive());
}

#[test]
fn emfile_on_accept_backs_off_and_recovers() {
    let mut d = Daemon::hello("");
    let addr = d.addr();
    // The limit at the lowest free descriptor number: the next accept fails with EMFILE.
    let used: Vec<i32> = d.fd_flags().iter().map(|f| f.0).collect();
    let lowest_free = (0..).find(|n| !used.contains(n)).unwrap();
    set_nofile(d.pid, lowest_free as u64);
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    d.wait_log("pausing accepts");
    assert!(d.alive());
    set_nofile(d.pid, 1024);
    // The connection waited in the backlog and is served now.
    let r = read_response(&mut s);
    assert_eq!(r.status, 200);
    assert_eq!(
        d.count_log("pausing accepts"),
        1,
        "logged once per burst:\n{}",
        d.logs()
    );
}

fn set_nofile(pid: i32, n: u64) {
    let r = libc::rlimit {
        rlim_cur: n,
        rlim_max: 4096,
    };
    // SAFETY: plain syscall with valid pointers.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &r, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn max_connections_caps_live_workers() {
    // Four keep-alive clients hold the four workers (parking off, so they
    // stay); four more requests wait, complete, in the gate.
    let d = Daemon::hello(&format!(
        "[server]\nmax_connections = 4\n[limits]\n{NO_PARKING}"
    ));
    let addr = d.addr();
    let mut holders: Vec<Client> = (0..4).map(|_| Client::new(addr)).collect();
    for c in &mut holders {
        assert_eq!(c.get("/").status, 200);
    }
    d.wait_children(4);
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let mut c = connect(addr);
            c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            std::thread::spawn(move || read_response(&mut c).status)
        })
        .collect();
    // They must not get a worker while the four are busy.
    for _ in 0..200 {
        let n = d.children().len();
        assert!(n <= 4, "{n} workers with max_connections = 4");
    }
    assert!(
        waiting.iter().all(|h| !h.is_finished()),
        "answered over the cap"
    );
    // Free the slots: each waiting request gets its answer as one frees.
    drop(holders);
    let mut max_seen = 0;
    while waiting.iter().any(|h| !h.is_finished()) {
        max_seen = max_seen.max(d.children().len());
    }
    for h in waiting {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert!(max_seen <= 4, "saw {max_seen} workers");
}

#[test]
fn abnormal_worker_end_is_logged() {
    let mut d = Daemon::hello(&format!("[limits]\n{NO_PARKING}"));
    let addr = d.addr();
    let mut held = Client::new(addr);
    assert_eq!(held.get("/").status, 200);
    d.wait_children(1);
    let (pid, _) = d.children()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    d.wait_log(&format!("worker {pid} (peer 127.0.0.1:"));
    d.wait_log("killed by signal 9 (SIGKILL)");
    d.wait_no_workers();
    assert_eq!(get(addr, "/").status, 200);
}

#[test]
fn bad_requests_get_4xx_and_a_clean_close() {
    let d = Daemon::hello("[limits]\nmax_header_bytes = 1024");
    let addr = d.addr();
    assert_eq!(exchange(addr, b"GARBAGE\r\n\r\n").status, 400);
    assert_eq!(
        exchange(addr, b"GET / HTTP/1.1\r\n\r\n").status,
        400,
        "HTTP/1.1 without Host"
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "a".repeat(2000)
    );
    assert_eq!(exchange(addr, big.as_bytes()).status, 431);
    assert_eq!(
        exchange(addr, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n").status,
        505
    );
    let head = exchange(
        addr,
        b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(head.header("content-length").as_deref(), Some("14"));
    let out = curl(&["-i", &format!("http://{addr}/")]);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.contains("\r\nDate: ") && out.contains("\r\nContent-Length: 14\r\n"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nHello, World!\n"), "{out}");
}

#[test]
fn header_timeout_answers_408() {
    let d = Daemon::hello("[limits]\nheader_timeout = \"300ms\"");
    let mut s = connect(d.addr());
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 408);
    // A connection that never sends a byte is closed quietly.
    let mut quiet = connect(d.addr());
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut quiet, &mut buf).unwrap();
    assert!(buf.is_empty());
    let _ = Duration::ZERO;
}

#[test]
fn a_worker_that_makes_no_progress_is_ended_by_the_backstop() {
    // A worker frozen (SIGSTOP) with a kept connection: its own deadlines
    // cannot fire, so the supervisor's backstop does, after stall_timeout
    // (here the longest other timeout, 1 s, plus 5 s): SIGTERM, then SIGKILL.
    let mut d = Daemon::hello(
        "[limits]\nstall_timeout = \"1s\"\nheader_timeout = \"1s\"\nbody_timeout = \"1s\"\n\
         keepalive_timeout = \"1s\"\npark_after = \"1s\"",
    );
    let mut c = Client::new(d.addr());
    assert_eq!(c.get("/").status, 200);
    d.wait_children(1);
    let (worker, _) = d.children()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), Signal::SIGSTOP).unwrap();
    d.wait_log(&format!("worker {worker} (peer 127.0.0.1:"));
    d.wait_log("(stall_timeout): terminating it");
    // Its end is logged as it is reaped (read from the log pipe a moment
    // later than the process table shows it gone: wait for the line).
    d.wait_log(&format!("worker {worker} (peer 127.0.0.1:"));
    d.wait_log("killed by signal 9 (SIGKILL)");
    d.wait_no_workers();
    // A download that keeps moving is never cut: served whole meanwhile.
    assert_eq!(get(d.addr(), "/").status, 200);
}

/// A 16 KiB tmpfs, unmounted when dropped (`None`: skipped, said so).
struct SmallFs {
    _dir: tempfile::TempDir,
    mnt: std::path::PathBuf,
}

impl SmallFs {
    fn mount() -> Option<SmallFs> {
        if !is_root() {
            skip_or_fail("needs root (to mount a small tmpfs)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("full");
        std::fs::create_dir(&mnt).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=16k",
                "lbaws-test",
                mnt.to_str().unwrap(),
            ])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            skip_or_fail("cannot mount a tmpfs here");
            return None;
        }
        Some(SmallFs { _dir: dir, mnt })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
    }
}

#[test]
fn access_log_lines_the_gate_loses_are_reported_with_no_worker_alive() {
    let Some(fs) = SmallFs::mount() else { return };
    let log = fs.mnt.join("access.log");
    let mut d = Daemon::hello(&format!(
        "[log]\naccess = \"{}\"\n[limits]\nheader_timeout = \"1s\"",
        log.display()
    ));
    std::fs::write(fs.mnt.join("filler"), vec![b'x'; 16 << 10]).ok();
    // Only the gate answers now (408s): no worker is ever forked.
    let half: Vec<_> = (0..20)
        .map(|i| {
            let mut s = connect_from(source(i), d.addr());
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    for mut s in half {
        assert_eq!(read_response(&mut s).status, 408);
    }
    assert!(d.children().is_empty());
    d.wait_log("line(s) lost (ENOSPC");
}

#[test]
fn access_log_losses_on_a_full_file_system_are_reported() {
    let Some(fs) = SmallFs::mount() else { return };
    let mnt = fs.mnt.clone();
    let log = mnt.join("access.log");
    let mut d = Daemon::hello(&format!("[log]\naccess = \"{}\"", log.display()));
    // One line first, so the log has a page with room left; then fill the
    // rest: the lines that follow fill that page, and the one that crosses
    // its end is written only in part.
    assert_eq!(get(d.addr(), "/").status, 200);
    assert!(wait_for(DEADLINE, || std::fs::metadata(&log)
        .is_ok_and(|m| m.len() > 0)));
    let filler = mnt.join("filler");
    let _ = std::fs::write(&filler, vec![b'x'; 16 << 10]);
    for _ in 0..200 {
        assert_eq!(get(d.addr(), "/").status, 200, "serving goes on");
    }
    d.wait_log("access log: ");
    assert!(d.logs().contains("line(s) lost (ENOSPC"), "{}", d.logs());
    // Every line in the file is whole: the part of a line that fitted was
    // taken back.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(get(d.addr(), "/").status, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 2, "{text:?}");
    for line in text.lines() {
        assert!(
            line.starts_with("127.0.0.1 - - [") && line.ends_with("\" 200 14 \"-\" \"-\""),
            "a line not whole: {line:?}"
        );
    }
    assert!(text.ends_with('\n'));
}
