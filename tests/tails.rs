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

/// Descriptors of the gate's that name the same socket as another: one
/// connection held twice (as a tail and, say, parked) would be sent and
/// read by two owners.
fn gate_sockets_held_twice(d: &Daemon) -> Vec<String> {
    let Some(gate) = d.gate() else { return vec![] };
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for e in std::fs::read_dir(format!("/proc/{gate}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(t) = std::fs::read_link(e.path()) {
            let t = t.to_string_lossy().into_owned();
            if t.starts_with("socket:") {
                *seen.entry(t).or_default() += 1;
            }
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(t, _)| t)
        .collect()
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
    // The worker let go of it: it did not also wait for (and park) the
    // connection's next request.
    assert_eq!(gate_sockets_held_twice(&d), Vec::<String>::new());
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

#[test]
fn a_download_the_gate_finishes_is_logged_in_its_sites_file_and_format() {
    let d = Daemon::with_config(
        r#"
[[listen]]
address = "127.0.0.1:0"

[log]
access = "{dir}/access.log"
access_format = "json"

[[site]]
names = ["a.test"]
access = "{dir}/a.log"

[[site.route]]
prefix = "/"
static = { root = "{dir}/www" }
"#,
    )
    .dirs(&["www"])
    .start();
    let big = std::fs::File::create(d.path("www/big")).unwrap();
    big.set_len(BIG).unwrap();
    let mut c = Client::new(d.addr());
    c.send(b"GET /big HTTP/1.1\r\nHost: a.test\r\nUser-Agent: slow\r\n\r\n");
    assert!(
        wait_for(DEADLINE, || gate_sends_a_file(&d)),
        "the gate never took the download"
    );
    let r = c.read(true);
    assert_eq!(r.status, 200, "{}", r.head);
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while got < BIG {
        let n = c.reader.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got} bytes");
        got += n as u64;
    }
    let site_log = || std::fs::read_to_string(d.path("a.log")).unwrap_or_default();
    assert!(
        wait_for(DEADLINE, || site_log().contains("/big")),
        "no line in the site's file; [log] access has: {}",
        access(&d)
    );
    let line = site_log();
    let line = line.lines().find(|l| l.contains("/big")).unwrap();
    for field in [
        "\"site\":\"a.test\"",
        "\"host\":\"a.test\"",
        "\"method\":\"GET\"",
        "\"target\":\"/big\"",
        "\"status\":200",
        &format!("\"bytes\":{BIG}"),
        "\"user_agent\":\"slow\"",
        "\"cut\":false",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(!line.contains("\"duration_us\":0,"), "{line}");
    assert!(!access(&d).contains("/big"), "{}", access(&d));
}
