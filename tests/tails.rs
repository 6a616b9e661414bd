//! A slow reader costs no process: a worker whose client stops taking the
//! bytes of a file hands the rest to the gate, which sends it, writes the
//! access line when the response really ends, and parks or closes the
//! connection.

mod util;

use std::io::{Read, Write};
use util::*;

/// Larger than loopback's socket buffers on both sides together.
const BIG: u64 = 64 << 20;

fn daemon(limits: &str) -> Daemon {
    let d = Daemon::with_config(&format!(
        r#"
[[listen]]
address = "127.0.0.1:0"

[log]
access = "{{dir}}/access.log"

[limits]
{limits}

[[route]]
prefix = "/"
static = {{ root = "{{dir}}/www" }}
"#
    ))
    .dirs(&["www"])
    .start();
    let big = std::fs::File::create(d.path("www/big")).unwrap();
    big.set_len(BIG).unwrap(); // sparse: no disk
    std::fs::write(d.path("www/small"), "small\n").unwrap();
    d
}

/// Whether the gate holds a response's file (a tail it sends).
fn gate_sends_a_file(d: &Daemon) -> bool {
    let Some(gate) = d.gate() else { return false };
    let big = d.path("www/big");
    std::fs::read_dir(format!("/proc/{gate}/fd")).is_ok_and(|dir| {
        dir.flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == big))
    })
}

fn access(d: &Daemon) -> String {
    std::fs::read_to_string(d.path("access.log")).unwrap_or_default()
}

#[test]
fn a_slow_download_is_finished_by_the_gate_and_the_connection_goes_on() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    c.send(b"GET /big HTTP/1.1\r\nHost: t\r\nUser-Agent: slow\r\n\r\n");
    // Not reading: the worker's send blocks a whole tick, and it hands the
    // rest to the gate.
    assert!(
        wait_for(DEADLINE, || gate_sends_a_file(&d)),
        "the gate never took the download"
    );
    d.wait_no_workers();
    // All of it comes, from the gate.
    let r = c.read(true);
    assert_eq!(r.status, 200, "{}", r.head);
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while got < BIG {
        let n = c
            .reader
            .read(&mut buf[..(BIG - got).min(1 << 20) as usize])
            .unwrap();
        assert!(n > 0, "closed after {got} bytes");
        got += n as u64;
    }
    // One access line, the whole body, not cut, written when it ended.
    assert!(wait_for(DEADLINE, || access(&d)
        .contains("\"GET /big HTTP/1.1\" 200 ")));
    let line = access(&d)
        .lines()
        .find(|l| l.contains("/big"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("\" 200 {BIG} \"-\" \"slow\"")) && !line.ends_with(" cut"),
        "{line}"
    );
    // The connection was parked in the gate: its next request gets a worker.
    let r = c.get("/small");
    assert_eq!((r.status, r.body_str().as_str()), (200, "small\n"));
}

#[test]
fn a_reader_that_stops_is_closed_at_the_send_deadline_with_its_line() {
    let mut d = daemon("body_timeout = \"2s\"\nmin_send_rate = 0");
    let mut s = connect(d.addr());
    s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(wait_for(DEADLINE, || gate_sends_a_file(&d)));
    d.wait_no_workers();
    // Never read: the gate closes it once nothing moved for body_timeout.
    d.wait_log("response stalled for 2s (body_timeout): closing");
    assert!(wait_for(DEADLINE, || access(&d).contains("/big")));
    let line = access(&d)
        .lines()
        .find(|l| l.contains("/big"))
        .unwrap()
        .to_string();
    assert!(line.contains("\" 200 ") && line.ends_with(" cut"), "{line}");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest); // what the buffers held, then the end
}
