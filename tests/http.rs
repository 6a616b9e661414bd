//! HTTP/1.1 in the worker: persistent connections, pipelining, request
//! bodies (read for a CGI script, not waited for by any other route), and
//! every refusal the RFC makes a MUST (each followed by a close).

mod util;

use nix::sys::signal::Signal;
use std::io::Write;
use util::*;

const ROUTES: &str = r#"
[[listen]]
address = "127.0.0.1:0"

[[route]]
prefix = "/"
respond = { status = 200, body = "root\n" }

[[route]]
prefix = "/a"
respond = { status = 200, body = "A" }

[[route]]
prefix = "/b"
respond = { status = 200, body = "B" }

[[route]]
prefix = "/c"
respond = { status = 201, body = "C", content_type = "text/x-c" }

[[route]]
prefix = "/old"
redirect = { to = "https://example.org/new", status = 308 }

[[route]]
prefix = "/count"
cgi = { script = "{dir}/count.sh" }
"#;

/// A CGI script that reads its whole body and answers with its length: a
/// route whose answer depends on the body, so the worker reads it first.
const COUNT_SH: &str = "#!/bin/sh\nn=$(wc -c | tr -d ' ')\nprintf 'Content-Type: text/plain\\nContent-Length: %s\\n\\n%s' \"${#n}\" \"$n\"\n";

fn daemon(extra: &str) -> Daemon {
    let d = Daemon::with_config(&format!("{extra}\n{ROUTES}")).start();
    let script = d.path("count.sh");
    std::fs::write(&script, COUNT_SH).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d
}

#[test]
fn keep_alive_reuses_one_worker() {
    let d = daemon(&format!("[limits]\n{NO_PARKING}"));
    let mut c = Client::new(d.addr());
    assert_eq!(c.get("/a").body, b"A");
    d.wait_children(1);
    let first = d.children()[0].0;
    assert_eq!(c.get("/b").body, b"B");
    assert_eq!(c.get("/a").body, b"A");
    assert_eq!(
        d.children().iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![first],
        "one connection, one worker"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    c.send(b"GET /c HTTP/1.1\r\nHost: t\r\n\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\nHEAD /b HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.read(false);
    assert_eq!((r.status, r.body.as_slice()), (201, &b"C"[..]));
    assert_eq!(r.header("content-type").as_deref(), Some("text/x-c"));
    assert_eq!(c.read(false).body, b"A");
    let head = c.read(true);
    assert_eq!(
        (head.status, head.header("content-length").as_deref()),
        (200, Some("1"))
    );
    let last = c.read(false);
    assert_eq!(last.body, b"B");
    assert_eq!(last.header("connection").as_deref(), Some("close"));
    assert!(c.closed());
}

#[test]
fn request_bodies_are_consumed_before_the_next_request() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    // Content-Length body, then chunked with an extension and a trailer, then a plain GET.
    c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    c.send(b"PUT /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n");
    c.send(b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read(false).body_str(), "5");
    assert_eq!(c.read(false).body_str(), "11");
    assert_eq!(c.read(false).body, b"C");
    // Expect: 100-continue is answered before the body is sent.
    c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    let cont = c.read(true);
    assert_eq!(cont.status, 100);
    c.send(b"abc");
    assert_eq!(c.read(false).body_str(), "3");
}

#[test]
fn bodies_a_route_does_not_need_are_not_waited_for() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    // A small body: answered at once; the body is dropped when it comes,
    // and the connection goes on.
    c.send(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhe");
    let r = c.read(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"A"[..]));
    assert_eq!(r.header("connection"), None, "kept");
    c.send(b"llo");
    assert_eq!(c.get("/b").body, b"B");
    // A large one, or one of unknown length: answered at once, then closed.
    for head in [
        "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n",
        "PUT /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        // Expect: 100-continue, and a final answer instead of 100: the
        // client need not send the body, so the connection cannot go on.
        "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    ] {
        let mut c = Client::new(d.addr());
        c.send(head.as_bytes());
        let r = c.read(false);
        assert_eq!(r.status, 200, "{head}");
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{head}");
        assert!(c.closed(), "{head}");
    }
}

/// Send one raw request on a fresh connection; expect `status`, `Connection:
/// close`, and then the end of the connection.
fn refused(d: &Daemon, raw: &[u8], status: u16) {
    let mut c = Client::new(d.addr());
    c.send(raw);
    let r = c.read(false);
    assert_eq!(
        r.status,
        status,
        "for {:?}: {}",
        String::from_utf8_lossy(raw),
        r.head
    );
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "for {:?}",
        String::from_utf8_lossy(raw)
    );
    assert!(c.closed(), "connection left open after {status}");
}

#[test]
fn malformed_requests_are_refused_and_closed() {
    let d = daemon("[limits]\nmax_uri_bytes = 100\nmax_header_bytes = \"2KiB\"\nmax_headers = 10\nmax_body_bytes = 10");
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", 400),                                  // no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),            // two Hosts
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),                     // bad Host
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),                             // bare LF
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),            // bare CR
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),                      // space before colon
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  2\r\n\r\n", 400),        // obs-fold
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: \x07\r\n\r\n", 400),            // control character
        (b"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400),                   // bad percent-encoding
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400), // bad chunk size
        (b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400), // no CRLF after data
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n", 417),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 413),
        (b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n", 413),
    ];
    for (raw, status) in cases {
        refused(&d, raw, *status);
    }
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(200));
    refused(&d, long_uri.as_bytes(), 414);
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "y".repeat(3000)
    );
    refused(&d, big_head.as_bytes(), 431);
    let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
    refused(
        &d,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
        431,
    );
}

#[test]
fn the_edges_of_the_grammar_are_refused() {
    let d = daemon("");
    let chunked = |body: &[u8]| {
        [
            &b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            body,
        ]
        .concat()
    };
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // Chunk sizes are 1*HEXDIG: no whitespace unless a ';' follows.
        (chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400),
        (chunked(b"5\r\nhello\r\n0 \r\n\r\n"), 400),
        // Chunk extensions are held to their grammar.
        (chunked(b"5;a\x00b\r\nhello\r\n0\r\n\r\n"), 400),
        (chunked(b"5;\xff\r\nhello\r\n0\r\n\r\n"), 400),
        (chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400),
        // A request line that is not method SP target SP version: 400.
        (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        (b"GE T /a HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        (b"GET /a  HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        // Only CRLF may come before the request line.
        (b"\rGET /a HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        // IP-literals must be IPv6 (or IPvFuture), then only :port.
        (b"GET /a HTTP/1.1\r\nHost: [a.b]\r\n\r\n".to_vec(), 400),
        (b"GET /a HTTP/1.1\r\nHost: [::1]x\r\n\r\n".to_vec(), 400),
        (b"GET /a HTTP/1.1\r\nHost: [::1]:8x\r\n\r\n".to_vec(), 400),
        (
            b"GET http://[1.2.3.4]/a HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET http://[::1]x/a HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET /a HTTP/3.1\r\nHost: a\r\n\r\n".to_vec(), 505),
    ];
    for (raw, status) in &cases {
        refused(&d, raw, *status);
    }
    // What the same rules accept.
    let mut c = Client::new(d.addr());
    c.send(&chunked(b"5 ; x = \"y z\"\r\nhello\r\n0\r\n\r\n"));
    assert_eq!(c.read(false).body_str(), "5");
    c.send(b"\r\nGET /a HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
    assert_eq!(c.read(false).body, b"A");
}

#[test]
fn refusals_of_head_requests_have_no_body() {
    let d = daemon("[limits]\nheader_timeout = \"300ms\"");
    for raw in [
        &b"HEAD /a HTTP/1.1\r\n\r\n"[..], // no Host: refused after it parsed
        b"HEAD /a HTTP/1.1\r\nHost: a\r\n", // never complete: the gate's 408
        b"HEAD /a b HTTP/1.1\r\nHost: a\r\n\r\n", // refused before it parsed
        b"HEAD /a HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n",
    ] {
        let mut c = Client::new(d.addr());
        c.send(raw);
        let r = c.read(true);
        assert!(r.status >= 400, "{}", r.head);
        assert!(r.header("content-length").is_some(), "{}", r.head);
        assert!(c.closed(), "bytes after the head of {}", r.head);
    }
}

#[test]
fn later_http_1_minors_are_served_as_1_1_and_1_0_gets_no_100() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    c.send(b"GET /a HTTP/1.2\r\nHost: t\r\n\r\n");
    let r = c.read(false);
    assert!(r.head.starts_with("HTTP/1.1 200 "), "{}", r.head);
    assert_eq!(r.header("connection"), None, "persistent, as 1.1");
    assert_eq!(c.get("/b").body, b"B");
    // RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored.
    let mut c = Client::new(d.addr());
    c.send(b"POST /count HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    c.send(b"abc");
    let r = c.read(false);
    assert_eq!((r.status, r.body_str().as_str()), (200, "3"), "{}", r.head);
}

#[test]
fn timeouts_408_then_idle_close() {
    let d = daemon("[limits]\nheader_timeout = \"300ms\"\nkeepalive_timeout = \"300ms\"");
    // Half a head: 408 and close.
    let mut c = Client::new(d.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    let r = c.read(false);
    assert_eq!(r.status, 408);
    assert!(c.closed());
    // Idle after a response: closed quietly.
    let mut c = Client::new(d.addr());
    assert_eq!(c.get("/a").status, 200);
    assert!(c.closed(), "idle keep-alive connection was not closed");
}

#[test]
fn http10_and_connection_tokens() {
    let d = daemon("[limits]\nmax_requests_per_connection = 2");
    // 1.0 without keep-alive: close.
    let r = exchange(d.addr(), b"GET /a HTTP/1.0\r\n\r\n");
    assert_eq!(
        (r.status, r.header("connection").as_deref()),
        (200, Some("close"))
    );
    // 1.0 with keep-alive: kept, and said so.
    let mut c = Client::new(d.addr());
    c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(
        c.read(false).header("connection").as_deref(),
        Some("keep-alive")
    );
    // The request cap: the second response closes.
    c.send(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read(false);
    assert_eq!(
        (r.body.as_slice(), r.header("connection").as_deref()),
        (&b"B"[..], Some("close"))
    );
    assert!(c.closed());
}

#[test]
fn targets_redirects_options_and_headers() {
    let d = daemon("[server]\nserver_header = false");
    let mut c = Client::new(d.addr());
    // Absolute-form, dot segments and percent-encoding are resolved before routing.
    assert_eq!(c.get("http://example.org/b").body, b"B");
    assert_eq!(c.get("/x/../%61").body, b"A");
    let r = c.get("/old/page");
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (308, Some("https://example.org/new"))
    );
    assert_eq!(r.header("server"), None, "server_header = false");
    assert!(r.header("date").is_some());
    c.send(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read(true);
    assert_eq!(r.status, 204);
    assert!(r.header("allow").is_some());
    // Climbing above the root is refused.
    refused(&d, b"GET /../a HTTP/1.1\r\nHost: t\r\n\r\n", 400);
}

#[test]
fn graceful_stop_closes_idle_keep_alive_connections_at_once() {
    // Parking off: the idle connection stays in its worker (the gate's
    // side of a stop is in gate.rs).
    let mut d = daemon("[server]\nshutdown_timeout = \"1h\"\n[limits]\nkeepalive_timeout = \"1h\"\npark_after = \"1h\"");
    let mut idle = Client::new(d.addr());
    assert_eq!(idle.get("/a").status, 200);
    d.signal(Signal::SIGTERM);
    // Not an hour: the idle worker sees the stop and closes.
    assert_eq!(d.wait_exit(DEADLINE).code(), Some(0));
    assert!(idle.closed());
    let _ = std::io::stdout().flush();
}
