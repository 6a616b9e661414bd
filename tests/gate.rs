//! A process per request in flight: the gate holds connections without a
//! complete head and parked keep-alive ones; workers exist only while a
//! request is being served. A source's share of the gate, slow bodies and
//! slow readers, answers that do not wait for a body, and the gate's own
//! life (stop, reload, a crash, its cap). Fair admission at capacity:
//! tests/admission.rs.
//!
//! Whether a worker was forked is read from the daemon's children (a worker
//! waiting for a head would live for the whole `header_timeout`, so polling
//! them cannot miss it), and which worker served a request from a CGI script
//! that prints its parent's pid.

mod util;

use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;
use util::*;

/// Prints the pid of the worker that runs it (its parent).
const PID_SH: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: %s\\n\\n%s' \"${#PPID}\" \"$PPID\"\n";
/// Reads its whole body, answers with its length.
const COUNT_SH: &str = "#!/bin/sh\nn=$(wc -c | tr -d ' ')\nprintf 'Content-Type: text/plain\\nContent-Length: %s\\n\\n%s' \"${#n}\" \"$n\"\n";

fn daemon(extra: &str) -> Daemon {
    let d = Daemon::with_config(&format!(
        r#"
[[listen]]
address = "127.0.0.1:0"

[log]
level = "debug"
access = "{{dir}}/access.log"

{extra}

[[route]]
prefix = "/"
respond = {{ status = 200, body = "hello\n" }}

[[route]]
prefix = "/files/"
static = {{ root = "{{dir}}/www" }}

[[route]]
prefix = "/pid"
cgi = {{ script = "{{dir}}/pid.sh" }}

[[route]]
prefix = "/count"
cgi = {{ script = "{{dir}}/count.sh" }}
"#
    ))
    .start();
    for (name, body) in [("pid.sh", PID_SH), ("count.sh", COUNT_SH)] {
        let p = d.path(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir_all(d.path("www")).unwrap();
    d
}

/// The worker pid a `/pid` request on `c` was served by.
fn worker_of(c: &mut Client) -> i32 {
    let r = c.get("/pid");
    assert_eq!(r.status, 200, "{}", r.head);
    r.body_str().parse().unwrap()
}

/// Read to EOF on another thread; meanwhile assert the daemon forks no
/// worker. Returns what was read.
fn read_with_no_worker(d: &Daemon, mut s: TcpStream) -> Vec<u8> {
    let reader = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        raw
    });
    while !reader.is_finished() {
        assert!(
            d.children().is_empty(),
            "a worker was forked: {:?}",
            d.children()
        );
    }
    reader.join().unwrap()
}

/// A full SYN queue (its length is the listener's backlog) makes the kernel
/// complete new connections with SYN cookies, and those reach `accept` at
/// once, before their request: the very case of a flood of silent
/// connections, each held in that queue by `TCP_DEFER_ACCEPT`. A client whose
/// connection came that way is served, not closed as if it had been silent.
#[test]
fn a_connection_completed_by_a_syn_cookie_is_served() {
    match std::fs::read_to_string("/proc/sys/net/ipv4/tcp_syncookies") {
        Ok(v) if v.trim() == "1" => {}
        other => return skip_or_fail(&format!("net.ipv4.tcp_syncookies is {other:?}, not 1")),
    }
    let d = Daemon::with_config(
        r#"
[[listen]]
address = "127.0.0.1:0"
backlog = 2

[log]
level = "debug"

[[route]]
prefix = "/"
respond = { status = 200, body = "hello\n" }
"#,
    )
    .start();
    // Connected as far as the clients know; held in the SYN queue by the
    // server until they send something (they never do).
    let _silent: Vec<TcpStream> = (0..4).map(|_| connect(d.addr())).collect();
    let idle = d.gate_fd_count();
    let mut s = connect(d.addr());
    // Accepted with nothing sent yet: it waits in the gate.
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.gate_fd_count() == idle {
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) | Err(_) if std::time::Instant::now() > deadline => {
                panic!("the connection never reached the gate")
            }
            Ok(0) => panic!("closed before it could send its request"),
            Ok(_) => panic!("an answer to nothing"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                panic!("reset before it could send its request")
            }
            Err(_) => {}
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 "), "{raw}");
}

fn half_head(src: Ipv4Addr, d: &Daemon) -> TcpStream {
    let mut s = connect_from(src, d.addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    s
}

#[test]
fn a_connection_that_never_sends_costs_no_process() {
    let d = daemon("[limits]\nheader_timeout = \"1s\"");
    let listener = listening_fds(d.pid)[0];
    assert!(
        defer_accept_of(d.pid, listener) >= 1,
        "TCP_DEFER_ACCEPT on the listener"
    );
    let silent: Vec<TcpStream> = (0..10).map(|_| connect(d.addr())).collect();
    // Served meanwhile.
    assert_eq!(get(d.addr(), "/").status, 200);
    d.wait_no_workers();
    // The kernel held them (TCP_DEFER_ACCEPT) for header_timeout: when they
    // are accepted with nothing sent, that time is up (counted from the
    // connect, not from the accept), so they are closed then and there,
    // never held in the gate for as long again.
    let idle = d.gate_fd_count();
    let closing: Vec<_> = silent
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut raw = Vec::new();
                let _ = s.read_to_end(&mut raw);
                raw
            })
        })
        .collect();
    while !closing.iter().all(|t| t.is_finished()) {
        assert_eq!(
            d.gate_fd_count(),
            idle,
            "a silent connection went to the gate"
        );
        assert!(d.children().is_empty(), "a worker was forked");
    }
    for t in closing {
        // Closed by the server, without a byte.
        assert!(t.join().unwrap().is_empty());
    }
}

#[test]
fn a_head_up_to_a_large_max_header_bytes_is_seen_whole() {
    // The gate and the supervisor look at a head without reading it: all
    // of it must fit the connection's receive buffer first.
    let d = daemon("[limits]\nmax_header_bytes = \"256KiB\"\nheader_timeout = \"60s\"");
    let mut head = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".to_vec();
    for i in 0..90 {
        head.extend_from_slice(format!("X-{i}: {}\r\n", "a".repeat(2200)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    assert!(head.len() > 190 << 10);
    let r = exchange(d.addr(), &head);
    assert_eq!(r.status, 200, "{}", r.head);
}

#[test]
fn a_half_head_is_closed_at_header_timeout_with_no_worker() {
    let d = daemon("[limits]\nheader_timeout = \"1s\"");
    let raw = read_with_no_worker(&d, half_head(source(0), &d));
    let r = parse_response(&raw);
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(r.header("date").is_some());
    assert_eq!(r.body_str(), "408 Request Timeout\n");
    // Logged like a worker's refusal: no request line.
    let log = d.path("access.log");
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&log)
        .is_ok_and(
            |l| l.contains("127.0.1.1 - - [") && l.contains("] \"-\" 408 20 ")
        )));
}

#[test]
fn a_complete_head_forks_at_once() {
    // An hour of header_timeout: anything held back waiting for a timer
    // would never be answered within the client's 15 s.
    let d =
        daemon("[limits]\nheader_timeout = \"1h\"\nmax_header_bytes = 1024\nmax_uri_bytes = 100");
    assert_eq!(
        exchange(
            d.addr(),
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .status,
        200
    );
    // In two parts, the first one waiting in the gate.
    let idle = d.gate_fd_count();
    let mut s = connect(d.addr());
    s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == idle + 1));
    assert!(d.children().is_empty());
    s.write_all(b"st: t\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 200);
    // What a worker must refuse goes to one at once, too.
    let big_head = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 1100]].concat();
    let cases: &[(&[u8], u16)] = &[
        (b"\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", 200), // empty lines first
        (b"GET / HTTP/1.1\nHost: t\n\n", 400),               // bare LF
        (&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01], 400),        // a TLS handshake
        (&big_head, 431),                                    // max_header_bytes, no end
        (&[b'a'; 200], 414),                                 // a first line past max_uri_bytes
    ];
    for (raw, status) in cases {
        let mut s = connect(d.addr());
        s.write_all(raw).unwrap();
        if *status == 200 {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert_eq!(
            read_response(&mut s).status,
            *status,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn an_idle_connection_is_parked_and_its_next_request_gets_a_new_worker() {
    let mut d = daemon("");
    let mut c = Client::new(d.addr());
    let first = worker_of(&mut c);
    // Idle past park_after: the worker hands the connection back and exits.
    d.wait_no_workers();
    assert!(!std::path::Path::new(&format!("/proc/{first}")).exists());
    let second = worker_of(&mut c);
    assert_ne!(first, second, "the same connection, a new worker");
    d.wait_no_workers();
    assert_eq!(c.get("/").body_str(), "hello\n");
    // Parked a third time (not still in its worker when the stop comes).
    d.wait_no_workers();
    // A parked connection has keepalive_timeout in all: it is closed quietly.
    d.signal(Signal::SIGTERM);
    assert!(
        c.closed(),
        "a parked connection is closed at a graceful stop"
    );
    assert_eq!(d.wait_exit(DEADLINE).code(), Some(0));
    assert!(d.logs().contains("3 parked"), "{}", d.logs());
}

#[test]
fn pipelined_requests_are_never_parked_half_read() {
    // Parking at once: the decision comes right after each response.
    let d = daemon("[limits]\npark_after = \"0s\"");
    let mut c = Client::new(d.addr());
    // Two complete requests in one write: one worker answers both.
    c.send(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n");
    let (a, b) = (c.read(false).body_str(), c.read(false).body_str());
    assert_eq!(
        a, b,
        "buffered requests are served by the worker that read them"
    );
    // A request and half of the next: the half must not be lost.
    c.send(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\nGET /count HTTP/1.1\r\nHost: t\r\nContent-Le");
    assert_eq!(c.read(false).status, 200);
    c.send(b"ngth: 4\r\n\r\nabcd");
    let r = c.read(false);
    assert_eq!((r.status, r.body_str().as_str()), (200, "4"));
    // And with nothing buffered, it parks at once.
    let w = worker_of(&mut c);
    d.wait_no_workers();
    assert_ne!(worker_of(&mut c), w);
}

#[test]
fn a_source_over_its_share_of_the_gate_is_answered_503() {
    let mut d = daemon("[server]\nmax_pending_per_source = 3");
    let (two, three) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    // Three half heads from 127.0.0.2 wait in the gate: its share.
    let idle = d.gate_fd_count();
    let waiting: Vec<TcpStream> = (0..3).map(|_| half_head(two, &d)).collect();
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == idle + 3));
    // A complete request from it needs no room in the gate: served.
    let mut served = Client::from(two, d.addr());
    assert_eq!(served.get("/").status, 200);
    // A fourth that would wait is refused: a 503, never a reset.
    let mut over = half_head(two, &d);
    let r = read_response(&mut over);
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    d.wait_log("the last from 127.0.0.2: its source held its share of the gate (max_pending_per_source = 3)");
    // Another host waits as it likes.
    let mut other = half_head(three, &d);
    other.write_all(b"Connection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut other).status, 200);
    // As they end, 127.0.0.2 gets room again.
    drop(waiting);
    assert!(wait_for(DEADLINE, || d.gate_fd_count() <= idle + 1));
    let mut again = half_head(two, &d);
    again.write_all(b"Connection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut again).status, 200);
}

#[test]
fn a_body_below_the_minimum_rate_gets_408() {
    let mut d = daemon("[limits]\nbody_timeout = \"1s\"\nmin_body_rate = 1000");
    // At a good rate: counted.
    let mut c = Client::new(d.addr());
    c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
    c.send(&[b'x'; 5000]);
    assert_eq!(c.read(false).body_str(), "5000");
    // A byte every 50 ms never stalls for body_timeout, but is far below
    // the rate.
    let mut s = connect(d.addr());
    s.write_all(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..400 {
        let _ = s.write_all(b"x");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    assert!(
        raw.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    // The worker writes its line after the 408 has gone out: wait for it.
    d.wait_log("B/s, below min_body_rate 1000: 408");
}

#[test]
fn an_answer_that_does_not_need_the_body_does_not_wait_for_it() {
    let d = daemon("");
    std::fs::write(d.path("www/f.txt"), "file\n").unwrap();
    // A 405 from a static route, a fixed response: neither waits for the
    // megabyte announced, and the connection closes after them.
    for target in ["/files/f.txt", "/"] {
        let mut c = Client::new(d.addr());
        c.send(
            format!("POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read(false);
        let want = if target == "/" { 200 } else { 405 };
        assert_eq!(r.status, want, "{target}");
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        assert!(c.closed());
    }
    // A CGI script's answer depends on the body: that one is read first.
    let mut c = Client::new(d.addr());
    c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nab");
    c.send(b"c");
    assert_eq!(c.read(false).body_str(), "3");
}

#[test]
fn a_client_reading_below_the_minimum_rate_is_closed() {
    let mut d = daemon("[limits]\nbody_timeout = \"1s\"\nmin_send_rate = 1000000");
    // Larger than what the socket buffers on both sides can hold.
    std::fs::write(d.path("www/big.bin"), vec![7u8; 64 << 20]).unwrap();
    let mut s = connect(d.addr());
    s.write_all(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // 16 KiB every 50 ms: about 320 kB/s, a third of the minimum.
    let mut got = 0usize;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        // The client's reading rate, not a synchronisation.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(got < 64 << 20, "the whole file was sent to a slow reader");
    d.wait_log("below min_send_rate 1000000: closing");
    d.wait_no_workers();
}

#[test]
fn storms_with_connections_waiting_and_parked_lose_nothing() {
    let mut d = daemon("[limits]\nheader_timeout = \"60s\"\nkeepalive_timeout = \"60s\"");
    let cfg = d.path("config.toml");
    let gate = d.wait_gate();
    let (sup_fds, gate_fds) = (d.fd_count(), d.gate_fd_count());
    // 20 connections with half a head, 20 parked after a first request.
    let mut waiting: Vec<TcpStream> = (0..20).map(|i| half_head(source(i), &d)).collect();
    let mut parked: Vec<Client> = (0..20).map(|i| Client::from(source(i), d.addr())).collect();
    for c in &mut parked {
        assert_eq!(c.get("/").status, 200);
    }
    d.wait_no_workers();
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == gate_fds + 40));
    // Reloads and a SIGCHLD storm.
    for n in 1..=3 {
        write_config(&cfg, &std::fs::read_to_string(&cfg).unwrap());
        d.signal(Signal::SIGHUP);
        assert!(wait_for(DEADLINE, || d.count_log("reloaded configuration") == n));
    }
    for _ in 0..500 {
        d.signal(Signal::SIGCHLD);
    }
    assert_eq!(d.gate(), Some(gate), "the same gate throughout");
    assert_eq!(d.fd_count(), sup_fds, "the supervisor holds none of them");
    // Every one is still there, and served.
    for s in &mut waiting {
        s.write_all(b"Connection: close\r\n\r\n").unwrap();
        assert_eq!(read_response(s).status, 200);
    }
    for c in &mut parked {
        assert_eq!(c.get("/").status, 200);
    }
    drop(parked);
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == gate_fds));
    d.wait_no_workers();
    assert_eq!(d.fd_count(), sup_fds);
    // A graceful stop: parked connections close at once, a head on its way
    // is still served.
    let mut kept = Client::new(d.addr());
    assert_eq!(kept.get("/").status, 200);
    d.wait_no_workers();
    let mut late = half_head(source(30), &d);
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == gate_fds + 2));
    d.signal(Signal::SIGTERM);
    assert!(kept.closed());
    late.write_all(b"\r\n").unwrap();
    let r = read_response(&mut late);
    assert_eq!(
        (r.status, r.header("connection").as_deref()),
        (200, Some("close"))
    );
    assert_eq!(d.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn the_gate_is_restarted_if_it_dies() {
    let mut d = daemon("[limits]\nheader_timeout = \"60s\"");
    let gate = d.wait_gate();
    let mut lost = half_head(source(0), &d);
    assert!(wait_for(DEADLINE, || d.gate_fd_count() >= 1));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(gate), Signal::SIGKILL).unwrap();
    d.wait_log(&format!("gate {gate} killed by SIGKILL"));
    // What it held is gone with it; the next one is not.
    assert!(lost.read_to_end(&mut Vec::new()).map_or(true, |n| n == 0));
    assert!(wait_for(DEADLINE, || d.gate().is_some_and(|g| g != gate)));
    let mut s = half_head(source(0), &d);
    s.write_all(b"Connection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 200);
    assert!(d.alive());
}

#[test]
fn at_max_pending_the_oldest_half_head_makes_room_with_a_408() {
    let mut d = daemon("[server]\nmax_pending = 4\n[limits]\nheader_timeout = \"60s\"");
    d.wait_log("max_pending 4");
    let idle = d.gate_fd_count();
    let mut conns: Vec<TcpStream> = Vec::new();
    for i in 0..8 {
        conns.push(half_head(source(i), &d));
        assert!(wait_for(DEADLINE, || d.gate_fd_count() == idle + (i + 1).min(4)));
    }
    // The first four made room, each answered 408 (they had sent half a
    // head); the last four are served.
    for (i, s) in conns.iter_mut().enumerate() {
        if i < 4 {
            let r = read_response(s);
            assert_eq!(r.status, 408, "connection {i}: {}", r.head);
        } else {
            s.write_all(b"Connection: close\r\n\r\n").unwrap();
            assert_eq!(read_response(s).status, 200, "connection {i}");
        }
    }
    d.wait_log("connection(s) closed to make room");
}

#[test]
fn a_flood_of_waiting_connections_is_held_without_loss() {
    // The gate stopped (SIGSTOP) while a thousand connections arrive: its
    // channel fills, and the supervisor holds back (its outbox, then the
    // kernel's backlog) rather than closing any; once the gate runs again,
    // it holds them all.
    let n = 1000;
    let d = daemon("[limits]\nheader_timeout = \"60s\"");
    let gate = nix::unistd::Pid::from_raw(d.wait_gate());
    let idle = d.gate_fd_count();
    nix::sys::signal::kill(gate, Signal::SIGSTOP).unwrap();
    let mut conns: Vec<TcpStream> = (0..n).map(|i| half_head(source(i), &d)).collect();
    // Until the supervisor has filled the channel and stopped accepting.
    assert!(wait_for(DEADLINE, || accept_queue(d.pid) > 0));
    nix::sys::signal::kill(gate, Signal::SIGCONT).unwrap();
    assert!(
        wait_for(DEADLINE, || d.gate_fd_count() == idle + n),
        "the gate holds {} of {n}; log:\n{}",
        d.gate_fd_count() - idle,
        d.logs()
    );
    assert!(!d.logs().contains("could not take"), "{}", d.logs());
    for s in conns.iter_mut().step_by(50) {
        s.write_all(b"Connection: close\r\n\r\n").unwrap();
        assert_eq!(read_response(s).status, 200);
    }
}

/// Connections waiting in the kernel's accept queue of the daemon's listener.
fn accept_queue(pid: i32) -> u32 {
    // /proc/net/tcp: a listening socket's rx_queue is its accept queue length.
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (state, queues, inode) = (f[3], f[4], f[9]);
            (state == "0A" && inodes.iter().any(|i| i == inode)).then(|| {
                let rx = queues.split(':').nth(1).unwrap_or("0");
                u32::from_str_radix(rx, 16).unwrap_or(0)
            })
        })
        .sum()
}

#[test]
fn a_worker_holds_its_connection_and_nothing_else() {
    // Beyond stdio: its connection, the stop pipe, the park channel, the
    // access log file and its scripts' Landlock rulesets; no listener, no channel of the supervisor's, no
    // other connection (there are twenty waiting in the gate meanwhile).
    let d = daemon(&format!("[limits]\n{NO_PARKING}\nheader_timeout = \"60s\""));
    let _waiting: Vec<TcpStream> = (0..20).map(|i| half_head(source(i), &d)).collect();
    let mut c = Client::new(d.addr());
    assert_eq!(c.get("/").status, 200);
    d.wait_children(1);
    let worker = d.children()[0].0;
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().unwrap().parse::<i32>().unwrap() > 2)
        .map(|e| {
            std::fs::read_link(e.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let sockets = fds.iter().filter(|l| l.starts_with("socket:")).count();
    let pipes = fds.iter().filter(|l| l.starts_with("pipe:")).count();
    let files: Vec<_> = fds.iter().filter(|l| l.starts_with('/')).collect();
    let rulesets = fds
        .iter()
        .filter(|l| l.contains("landlock-ruleset"))
        .count();
    assert_eq!(
        (sockets, pipes, files.len(), rulesets, fds.len()),
        (2, 1, 1, 2, 6),
        "the connection and the park channel, the stop pipe, the access log, \
         the sandbox of each of the two CGI routes' scripts: {fds:?}"
    );
    assert!(files[0].ends_with("access.log"), "{fds:?}");
}
