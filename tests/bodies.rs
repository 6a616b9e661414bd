//! Request bodies cost no process while they come: a CGI request whose
//! body has not all arrived is handed to the gate, which receives it (under
//! the same deadlines a worker keeps), and a worker starts the script once
//! the body is whole. `buffer_body = false` keeps the worker reading.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use util::*;

/// Prints the length of its stdin and a digest of it (its bytes summed).
const SUM_SH: &str = "#!/bin/sh\nbody=$(od -An -v -tu1 | tr -s ' ' '\\n' | awk 'NF { n++; s += $1 } END { printf \"%d %d\", n, s }')\nprintf 'Content-Type: text/plain\\nContent-Length: %s\\n\\n%s' \"${#body}\" \"$body\"\n";

fn daemon(limits: &str, cgi_extra: &str) -> Daemon {
    let d = Daemon::with_config(&format!(
        r#"
[[listen]]
address = "127.0.0.1:0"

[log]
level = "debug"
access = "{{dir}}/access.log"

[limits]
{limits}

[[route]]
prefix = "/"
respond = {{ status = 200, body = "hello\n" }}

[[route]]
prefix = "/sum"
cgi = {{ script = "{{dir}}/sum.sh"{cgi_extra} }}
"#
    ))
    .start();
    let p = d.path("sum.sh");
    std::fs::write(&p, SUM_SH).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d
}

/// What `sum.sh` answers for `body`.
fn sum_of(body: &[u8]) -> String {
    format!(
        "{} {}",
        body.len(),
        body.iter().map(|&b| b as u64).sum::<u64>()
    )
}

/// Send `head` and the parts of a body, each once the gate has the
/// connection (and the file its request waits in) and no worker does.
fn trickle(d: &Daemon, head: &[u8], parts: &[&[u8]]) -> TcpStream {
    let mut s = connect(d.addr());
    s.write_all(head).unwrap();
    for part in parts {
        s.write_all(part).unwrap();
        assert!(
            wait_for(DEADLINE, || gate_holds_a_request(d)),
            "the gate never held the request's file"
        );
        d.wait_no_workers();
    }
    s
}

/// Whether the gate holds a request's file (a body it receives).
fn gate_holds_a_request(d: &Daemon) -> bool {
    let Some(gate) = d.gate() else { return false };
    std::fs::read_dir(format!("/proc/{gate}/fd"))
        .map(|dir| {
            dir.flatten().any(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|t| t.to_string_lossy().contains("memfd:lbaws-request"))
            })
        })
        .unwrap_or(false)
}

#[test]
fn a_body_that_trickles_is_received_by_the_gate_then_the_script_runs() {
    let d = daemon("", "");
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "POST /sum HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut s = trickle(&d, head.as_bytes(), &[&body[..10], &body[10..1000]]);
    // No worker until the body is whole...
    assert!(d.children().is_empty());
    s.write_all(&body[1000..]).unwrap();
    // ...then the script gets all of it, once.
    let r = read_response(&mut s);
    assert_eq!((r.status, r.body_str()), (200, sum_of(&body)), "{}", r.head);
}

#[test]
fn a_chunked_body_and_a_pipelined_request_after_it() {
    let d = daemon("", "");
    let mut s = trickle(
        &d,
        b"POST /sum HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        &[b"5\r\nhel", b"lo\r\n6;ext=1\r\n world\r\n"],
    );
    // The end of the body, and the next request in the same write: the gate
    // reads exactly the body, the next worker the next request.
    s.write_all(b"0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 2, "{text}");
    assert!(
        answers[0].starts_with("200 ") && answers[0].ends_with(&sum_of(b"hello world")),
        "{text}"
    );
    assert!(
        answers[1].starts_with("200 ") && answers[1].ends_with("hello\n"),
        "{text}"
    );
}

#[test]
fn the_gate_refuses_bodies_like_a_worker_would() {
    let d = daemon(
        "max_body_bytes = 100\nbody_timeout = \"1s\"\nmin_body_rate = 0",
        "",
    );
    // Too large (chunked: known only as it comes): 413.
    let mut s = trickle(
        &d,
        b"POST /sum HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        &[b"50\r\n"],
    );
    s.write_all(&[b'a'; 80]).unwrap();
    s.write_all(b"\r\n50\r\n").unwrap();
    let _ = s.write_all(&[b'a'; 80]);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(parse_response(&raw).status, 413);
    drop(s); // (a worker that answered it would linger until then)
             // Bad framing: 400.
    let mut s = trickle(
        &d,
        b"POST /sum HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        &[b"5\r\nab"],
    );
    s.write_all(b"c\r\nzz\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 400);
    drop(s);
    // Stalled past body_timeout: 408, from the gate.
    let mut s = trickle(
        &d,
        b"POST /sum HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n",
        &[b"abc"],
    );
    assert_eq!(read_response(&mut s).status, 408);
    assert!(d.children().is_empty(), "no worker was started for it");
}

#[test]
fn with_buffer_body_off_the_worker_reads_the_body() {
    let d = daemon("", ", buffer_body = false");
    let mut s = connect(d.addr());
    s.write_all(
        b"POST /sum HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nConnection: close\r\n\r\nabc",
    )
    .unwrap();
    // The worker that read the head waits for the body itself.
    d.wait_children(1);
    s.write_all(b"def").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.body_str(), sum_of(b"abcdef"));
}

#[test]
fn a_large_body_moves_to_temp_dir_and_expect_100_continue_is_answered_once() {
    let d = daemon("cgi_body_in_memory = \"1KiB\"", "");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let head = format!(
        "POST /sum HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let mut c = Client::new(d.addr());
    c.send(head.as_bytes());
    let r = c.read(true);
    assert_eq!(r.status, 100, "{}", r.head);
    d.wait_no_workers();
    c.send(&body[..100_000]);
    c.send(&body[100_000..]);
    let r = c.read(false);
    assert_eq!((r.status, r.body_str()), (200, sum_of(&body)), "{}", r.head);
    // The connection goes on.
    assert_eq!(c.get("/").status, 200);
}
