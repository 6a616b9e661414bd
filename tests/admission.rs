//! Fair admission: one source may use the whole server when nobody else
//! needs it, nobody is locked out, every refusal is answered, and every
//! state has a deadline, including "complete, waiting for a worker".
//!
//! A worker is held busy by a download its client does not read (a file far
//! larger than the socket buffers: the worker blocks in its send until the
//! client reads), and set free by reading it to the end: no timing.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::Instant;
use util::*;

/// Larger than loopback's socket buffers on both sides together.
const BIG: u64 = 64 << 20;

fn daemon(extra_server: &str, extra_limits: &str) -> Daemon {
    let d = Daemon::with_config(&format!(
        r#"
[server]
{extra_server}

[[listen]]
address = "127.0.0.1:0"

[log]
access = "{{dir}}/access.log"

[limits]
{extra_limits}

[[route]]
prefix = "/"
respond = {{ status = 200, body = "hello\n" }}

[[route]]
prefix = "/files/"
static = {{ root = "{{dir}}/www" }}

[[route]]
prefix = "/status"
status = {{ format = "text" }}

[[route]]
prefix = "/cgi"
cgi = {{ script = "{{dir}}/hello.sh" }}
"#
    ))
    .dirs(&["www"])
    .start();
    // Sparse: costs no disk, reads as zeros.
    let big = std::fs::File::create(d.path("www/big")).unwrap();
    big.set_len(BIG).unwrap();
    let script = d.path("hello.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 6\\n\\nhello\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d
}

/// A download its client does not read: it keeps its worker busy until
/// [`Hold::release`].
struct Hold(TcpStream);

impl Hold {
    /// Started, and its worker writing (the first byte of the answer came).
    fn start(src: Ipv4Addr, d: &Daemon) -> Hold {
        let h = Hold::ask(src, d);
        let mut s = h;
        s.first_byte();
        s
    }

    /// Asked for; its worker may not have started.
    fn ask(src: Ipv4Addr, d: &Daemon) -> Hold {
        let mut s = connect_from(src, d.addr());
        s.write_all(b"GET /files/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        Hold(s)
    }

    fn first_byte(&mut self) {
        let mut b = [0u8; 1];
        self.0.read_exact(&mut b).expect("the download begins");
        assert_eq!(&b, b"H");
    }

    /// Whether its answer has begun, without waiting.
    fn begun(&self) -> bool {
        self.0.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = self.0.peek(&mut b);
        self.0.set_nonblocking(false).unwrap();
        match r {
            Ok(n) => n > 0,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("{e}"),
        }
    }

    /// Read it all: its worker finishes and ends.
    fn release(mut self) {
        let mut sink = [0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            match self.0.read(&mut sink) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) => panic!("reading the download: {e}"),
            }
        }
        assert!(n >= BIG, "the whole download: {n} bytes");
    }
}

/// A complete request, sent; its answer is read later.
fn ask(src: Ipv4Addr, d: &Daemon, path: &str) -> TcpStream {
    let mut s = connect_from(src, d.addr());
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// The access log's lines from client `ip`, in order, with their status.
fn access_from(d: &Daemon, ip: &str) -> Vec<String> {
    std::fs::read_to_string(d.path("access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("{ip} ")))
        .map(str::to_string)
        .collect()
}

#[test]
fn one_source_alone_is_served_whole() {
    // The tutorial's test from one host (no spread of source addresses),
    // and as many CGI requests at once: with the defaults, every one is
    // answered 200.
    let d = daemon("", "");
    let addr = d.addr();
    for (n, path, body) in [(256, "/", "hello\n"), (200, "/cgi", "hello\n")] {
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let b = barrier.clone();
                let path = path.to_string();
                std::thread::spawn(move || {
                    let mut s = connect(addr);
                    b.wait(); // all connected: the daemon has them all at once
                    let req =
                        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                    s.write_all(req.as_bytes()).unwrap();
                    read_response(&mut s)
                })
            })
            .collect();
        for t in threads {
            let r = t.join().unwrap();
            assert_eq!((r.status, r.body_str().as_str()), (200, body), "{}", r.head);
        }
    }
    d.wait_no_workers();
    assert!(!d.logs().contains("refused"), "{}", d.logs());
}

#[test]
fn at_capacity_every_complete_request_is_answered_503_at_queue_timeout() {
    let d = daemon("max_connections = 1", "queue_timeout = \"1s\"");
    let hold = Hold::start(Ipv4Addr::new(127, 0, 0, 9), &d);
    // Fifty complete requests from ten sources: none can have the worker.
    let waiting: Vec<TcpStream> = (0..50).map(|i| ask(source(i % 10), &d, "/")).collect();
    for mut s in waiting {
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .expect("an answer and a clean close, never a reset");
        let r = parse_response(&raw);
        assert_eq!(r.status, 503, "{}", r.head);
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        assert_eq!(r.body_str(), "503 Service Unavailable\n");
    }
    // Each with its access log line, written by the gate.
    assert!(wait_for(DEADLINE, || {
        (0..10)
            .map(|i| access_from(&d, &source(i).to_string()))
            .map(|l| l.iter().filter(|l| l.contains("\"-\" 503 ")).count())
            .sum::<usize>()
            == 50
    }));
    hold.release();
    assert_eq!(get(d.addr(), "/").status, 200, "served again once free");
    let text = String::from_utf8(status_text(&d)).unwrap();
    assert!(text.contains(" 50 queue timeout,"), "{text}");
    let mut d = d;
    d.wait_log("request(s) waited queue_timeout for a worker: answered 503");
}

#[test]
fn free_workers_go_to_the_waiting_sources_in_turn() {
    let d = daemon(
        "max_connections = 1\nworker_reserve = 0",
        "queue_timeout = \"60s\"",
    );
    let (a, b) = (source(1), source(2));
    let hold = Hold::start(Ipv4Addr::new(127, 0, 0, 9), &d);
    let idle = d.gate_fd_count();
    // Ten requests from A wait for the worker, then one from B.
    let from_a: Vec<TcpStream> = (0..10).map(|_| ask(a, &d, "/")).collect();
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == idle + 10));
    let from_b = ask(b, &d, "/");
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == idle + 11));
    hold.release();
    for mut s in from_a.into_iter().chain([from_b]) {
        assert_eq!(read_response(&mut s).status, 200);
    }
    // One worker served them one at a time: B's turn came second, not
    // after A's ten (first come, first served).
    let log = std::fs::read_to_string(d.path("access.log")).unwrap();
    let order: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|ip| *ip == a.to_string() || *ip == b.to_string())
        .collect();
    assert_eq!(order.len(), 11, "{log}");
    assert_eq!(order[1], b.to_string(), "served in turn: {order:?}");
}

#[test]
fn busy_keep_alive_connections_take_turns() {
    // One worker, and a keep-alive client that never leaves it idle (its
    // worker would never park on its own): another client is still served,
    // because the busy connection hands its worker back after a response
    // while a request waits.
    let d = daemon(
        "max_connections = 1\nworker_reserve = 0",
        "park_after = \"30s\"\nkeepalive_timeout = \"60s\"\nqueue_timeout = \"60s\"\n\
         max_requests_per_connection = 100000000",
    );
    let addr = d.addr();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut c = Client::from(source(1), addr);
            let start = Instant::now();
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                assert_eq!(c.get("/").status, 200);
                n += 1;
                assert!(
                    start.elapsed() < DEADLINE,
                    "the other client never got a turn"
                );
            }
            n
        })
    };
    // Once the busy client is going, the other asks.
    assert!(wait_for(DEADLINE, || d.children().len() == 1));
    let mut other = ask(source(2), &d, "/");
    assert_eq!(read_response(&mut other).status, 200);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(busy.join().unwrap() > 0);
    let text = String::from_utf8(status_text(&d)).unwrap();
    let turns: u64 = text
        .split_once(" turns\n")
        .and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(turns > 0, "{text}");
}

/// The status page's text (asked like any request: it may wait for a worker).
fn status_text(d: &Daemon) -> Vec<u8> {
    let r = get(d.addr(), "/status");
    assert_eq!(r.status, 200, "{}", r.head);
    r.body
}

#[test]
fn the_reserve_keeps_workers_for_other_sources() {
    // Four workers, two kept for sources holding fewer than two: one source
    // alone gets two of them for its long downloads, and another source is
    // served beside them.
    let d = daemon(
        "max_connections = 4\nworker_reserve = 2",
        "queue_timeout = \"60s\"",
    );
    let a = source(1);
    let mut holds: Vec<Hold> = (0..4).map(|_| Hold::ask(a, &d)).collect();
    assert!(wait_for(DEADLINE, || d.children().len() == 2));
    let begun = || holds.iter().filter(|h| h.begun()).count();
    assert!(wait_for(DEADLINE, || begun() == 2));
    // Another source is served while they hold on.
    assert_eq!(
        read_response(&mut ask(source(2), &d, "/")).status,
        200,
        "a light source takes a reserved worker"
    );
    assert_eq!(begun(), 2, "the other two still wait");
    // As A's downloads end, its waiting ones get their turn.
    let first = holds.iter().position(|h| h.begun()).unwrap();
    holds.remove(first).release();
    let second = holds.iter().position(|h| h.begun()).unwrap();
    holds.remove(second).release();
    for mut h in holds {
        h.first_byte();
        h.release();
    }
}

#[test]
fn at_max_pending_a_complete_request_is_never_dropped_to_make_room() {
    let d = daemon(
        "max_pending = 4\nmax_connections = 1\nworker_reserve = 0",
        "queue_timeout = \"60s\"",
    );
    let idle = d.gate_fd_count();
    // Two keep-alive connections, parked in the gate (idle).
    let mut parked: Vec<Client> = (0..2)
        .map(|i| {
            let mut c = Client::from(source(10 + i), d.addr());
            assert_eq!(c.get("/").status, 200);
            c
        })
        .collect();
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == idle + 2));
    // The worker busy; two complete requests wait: the gate is full.
    let hold = Hold::start(Ipv4Addr::new(127, 0, 0, 9), &d);
    let mut queued: Vec<TcpStream> = (0..2).map(|i| ask(source(20 + i), &d, "/")).collect();
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == idle + 4));
    // Two more complete requests: each makes room by closing an idle parked
    // connection (closed quietly: it had no request), and waits.
    for (i, p) in parked.iter_mut().enumerate() {
        queued.push(ask(source(30 + i), &d, "/"));
        assert!(p.closed(), "the idle parked connection {i} made room");
    }
    // A fifth finds only complete requests: it is refused, with a 503.
    let mut over = ask(source(40), &d, "/");
    let r = read_response(&mut over);
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // Every waiting request is served once the worker is free.
    hold.release();
    for s in &mut queued {
        assert_eq!(read_response(s).status, 200);
    }
    let mut d = d;
    d.wait_log("new connection(s) refused (503), the last from 127.0.1.41");
}

#[test]
fn the_gate_writes_where_the_logs_went_after_rotation_and_reload() {
    let mut d = daemon("", "header_timeout = \"1s\"");
    // A half head: the gate answers 408 and logs it.
    let timeout = |d: &Daemon, src: Ipv4Addr| {
        let mut s = connect_from(src, d.addr());
        s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert_eq!(read_response(&mut s).status, 408);
    };
    let lines_in = |d: &Daemon, name: &str, ip: Ipv4Addr| {
        std::fs::read_to_string(d.path(name))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&format!("{ip} ")) && l.contains(" 408 "))
            .count()
    };
    timeout(&d, source(1));
    assert!(wait_for(DEADLINE, || lines_in(&d, "access.log", source(1)) == 1));
    // logrotate: the file moved, SIGUSR1.
    std::fs::rename(d.path("access.log"), d.path("access.log.1")).unwrap();
    d.signal(nix::sys::signal::Signal::SIGUSR1);
    d.wait_log("SIGUSR1: log files reopened");
    timeout(&d, source(2));
    assert!(wait_for(DEADLINE, || lines_in(&d, "access.log", source(2)) == 1));
    assert_eq!(
        lines_in(&d, "access.log.1", source(2)),
        0,
        "not in the rotated file"
    );
    // A reload that moves the access log.
    let cfg = std::fs::read_to_string(d.path("config.toml")).unwrap();
    let moved = cfg.replace("/access.log\"", "/other.log\"");
    assert_ne!(cfg, moved);
    write_config(&d.path("config.toml"), &moved);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("reloaded configuration");
    timeout(&d, source(3));
    assert!(wait_for(DEADLINE, || lines_in(&d, "other.log", source(3)) == 1));
    assert_eq!(lines_in(&d, "access.log", source(3)), 0);
}

#[test]
fn the_gate_lives_through_descriptors_it_cannot_take() {
    let mut d = daemon("", "header_timeout = \"60s\"");
    let gate = d.wait_gate();
    // The gate's descriptor table has room for two more connections.
    set_nofile(gate, limit_with_room(gate, 2));
    let mut conns: Vec<TcpStream> = Vec::new();
    for i in 0..6 {
        let mut s = connect_from(source(i), d.addr());
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
        conns.push(s);
    }
    // Those it could not take came back to the supervisor, which answered
    // them (503: they had sent half a head); the others wait in the gate.
    d.wait_log("could not be taken (descriptor limit?)");
    let mut statuses = Vec::new();
    for s in conns.iter_mut() {
        // A refused one was closed: this write may meet a reset, after the
        // answer had arrived.
        let _ = s.write_all(b"Connection: close\r\n\r\n");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        statuses.push(parse_response(&raw).status);
    }
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503) && statuses.contains(&200),
        "{statuses:?}"
    );
    assert_eq!(d.gate(), Some(gate), "the gate lives on");
    assert_eq!(get(d.addr(), "/").status, 200);
}

/// The `RLIMIT_NOFILE` that leaves `pid` room for `room` more descriptors
/// (new ones take the lowest free numbers, below the limit).
fn limit_with_room(pid: i32, room: usize) -> u64 {
    let open: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut free = 0;
    let mut n = 0;
    loop {
        if !open.contains(&n) {
            free += 1;
            if free > room {
                return n;
            }
        }
        n += 1;
    }
}

fn set_nofile(pid: i32, n: u64) {
    let r = libc::rlimit {
        rlim_cur: n,
        rlim_max: n.max(4096),
    };
    // SAFETY: plain syscall with valid pointers.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &r, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}
