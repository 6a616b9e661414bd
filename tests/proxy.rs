//! The PROXY protocol on a listener (`proxy_protocol`, `proxy_from`): behind
//! a real HAProxy (`send-proxy`, `send-proxy-v2`, its v2 health checks), the
//! client's address is the one in the access log, in `REMOTE_ADDR` and
//! under the per-source limit; a header from outside `proxy_from`, a
//! missing, malformed or late one is refused (closed, counted); a v2
//! `LOCAL` header keeps the balancer's own address.

mod util;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use util::*;

/// Prints REMOTE_ADDR and REMOTE_PORT.
const REMOTE_SH: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n%s %s\\n' \"$REMOTE_ADDR\" \"$REMOTE_PORT\"\n";

/// lbaws with one PROXY listener (trusting 127.0.0.1 only), an access log,
/// `/remote` (a CGI script) and `/` (a fixed body).
fn daemon(extra_server: &str) -> Daemon {
    let d = Daemon::with_config(&format!(
        r#"
[server]
{extra_server}

[[listen]]
address = "127.0.0.1:0"
proxy_protocol = true
proxy_from = ["127.0.0.1/32", "10.0.0.0/8"]

[log]
access = "{{dir}}/access.log"

[limits]
header_timeout = "1s"

[[route]]
prefix = "/remote"
cgi = {{ script = "{{dir}}/cgi/remote.sh" }}

[[route]]
prefix = "/status"
status = {{ format = "text" }}

[[route]]
prefix = "/"
respond = {{ status = 200, body = "hello\n" }}
"#
    ))
    .dirs(&["cgi"])
    .start();
    let script = d.path("cgi/remote.sh");
    std::fs::write(&script, REMOTE_SH).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn access_log(d: &Daemon) -> String {
    std::fs::read_to_string(d.path("access.log")).unwrap_or_default()
}

/// Wait for an access-log line containing every one of `parts`.
fn wait_access(d: &Daemon, parts: &[&str]) -> String {
    let mut found = String::new();
    let ok = wait_for(DEADLINE, || {
        match access_log(d)
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            Some(l) => {
                found = l.to_string();
                true
            }
            None => false,
        }
    });
    assert!(ok, "no access-log line with {parts:?}:\n{}", access_log(d));
    found
}

/// Send `bytes` from `src`; the whole answer (empty if refused: closed).
fn send_from(src: Ipv4Addr, addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect_from(src, addr);
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out); // a reset is a refusal too
    out
}

/// A v2 header: PROXY over TCP/IPv4 from `src`, or `LOCAL` when `None`.
fn v2_header(src: Option<SocketAddr>) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match src {
        None => h.extend_from_slice(&[0x20, 0x00, 0, 0]),
        Some(SocketAddr::V4(a)) => {
            h.extend_from_slice(&[0x21, 0x11, 0, 12]);
            h.extend_from_slice(&a.ip().octets());
            h.extend_from_slice(&[127, 0, 0, 1]);
            h.extend_from_slice(&a.port().to_be_bytes());
            h.extend_from_slice(&80u16.to_be_bytes());
        }
        Some(SocketAddr::V6(_)) => unreachable!(),
    }
    h
}

const GET_REMOTE: &[u8] = b"GET /remote HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// The "stopped:" line's count of PROXY refusals, after a graceful stop.
fn refusals_at_stop(mut d: Daemon) -> usize {
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_log("stopped:");
    let logs = d.logs();
    let line = logs.lines().find(|l| l.contains("stopped:")).unwrap();
    line.split(", ")
        .find(|p| p.ends_with("refused for their PROXY header"))
        .and_then(|p| p.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

// ---------------------------------------------------------------------------
// HAProxy

struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy in the foreground (`-db`), a child of this test: `mode tcp`
/// frontends on `v1` and `v2` relaying to `backend` with `send-proxy` and
/// `send-proxy-v2`; the v2 server is health-checked over HTTP (`/health`),
/// with the PROXY header HAProxy sends on its checks.
fn haproxy(backend: SocketAddr, v1: &TcpListener, v2: &TcpListener) -> Option<Haproxy> {
    if !have("haproxy") {
        skip_or_fail("haproxy is not installed (scripts/test installs it)");
        return None;
    }
    // HAProxy takes its frontends' sockets bound here (`bind fd@N`).
    let (v1, v2) = (v1.as_raw_fd(), v2.as_raw_fd());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 64\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 20s\n    timeout server 20s\n\
             frontend v1\n    bind fd@{v1}\n    default_backend lbaws_v1\n\
             frontend v2\n    bind fd@{v2}\n    default_backend lbaws_v2\n\
             backend lbaws_v1\n    server s1 {backend} send-proxy\n\
             backend lbaws_v2\n    option httpchk\n    http-check send meth GET uri /health ver HTTP/1.1 hdr Host lb\n\
             \x20   server s1 {backend} send-proxy-v2 check check-send-proxy inter 200ms\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("haproxy");
    inherit_fds(&mut cmd, &[v1, v2]);
    let child = cmd
        .arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run haproxy");
    Some(Haproxy { child, _dir: dir })
}

#[test]
fn behind_haproxy_the_client_address_is_seen_everywhere() {
    let d = daemon("");
    let (v1, v2) = (loopback_listener(), loopback_listener());
    let Some(_hap) = haproxy(d.addr(), &v1, &v2) else {
        return;
    };
    let (v1, v2) = (v1.local_addr().unwrap(), v2.local_addr().unwrap());
    for (front, client) in [
        (v1, Ipv4Addr::new(127, 0, 0, 7)),
        (v2, Ipv4Addr::new(127, 0, 0, 8)),
    ] {
        let port = front.port();
        let mut s = connect_from(client, front);
        let client_port = s.local_addr().unwrap().port();
        s.write_all(GET_REMOTE).unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, 200, "{}{}", r.head, r.body_str());
        assert_eq!(
            r.body_str(),
            format!("{client} {client_port}\n"),
            "REMOTE_ADDR and REMOTE_PORT are the client's (through port {port})"
        );
        let line = wait_access(
            &d,
            &[&format!("{client} - - ["), "\"GET /remote HTTP/1.1\" 200"],
        );
        assert!(line.starts_with(&client.to_string()), "{line}");
    }
    // HAProxy's health checks carry a v2 LOCAL header: they are served, and
    // logged under the balancer's own address.
    let line = wait_access(&d, &["\"GET /health HTTP/1.1\" 200"]);
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert_eq!(refusals_at_stop(d), 0);
}

#[test]
fn a_header_from_outside_proxy_from_is_refused() {
    let mut d = daemon("");
    let mut forged = b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 80\r\n".to_vec();
    forged.extend_from_slice(GET_REMOTE);
    let out = send_from(Ipv4Addr::new(127, 0, 0, 9), d.addr(), &forged);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    d.wait_log("refused on a proxy_protocol listener; the last from 127.0.0.9: not in proxy_from");
    // From a trusted balancer the same bytes are served.
    let out = send_from(Ipv4Addr::LOCALHOST, d.addr(), &forged);
    let r = parse_response(&out);
    assert_eq!(r.body_str(), "203.0.113.9 4000\n");
    assert!(!access_log(&d).contains("127.0.0.9"), "{}", access_log(&d));
    assert_eq!(refusals_at_stop(d), 1);
}

#[test]
fn missing_malformed_and_late_headers_are_refused() {
    let mut d = daemon("");
    let lb = Ipv4Addr::LOCALHOST;
    // No header: a plain request.
    let out = send_from(lb, d.addr(), GET_REMOTE);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    d.wait_log("the last from 127.0.0.1: no PROXY header");
    // A malformed one.
    let mut bad = b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 80\r\n".to_vec();
    bad.extend_from_slice(GET_REMOTE);
    assert!(send_from(lb, d.addr(), &bad).is_empty());
    d.wait_log("v1: bad port");
    // Part of one, then nothing: the gate closes it at header_timeout.
    let mut s = connect_from(lb, d.addr());
    s.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    d.wait_log("the last waiting in the gate: no valid PROXY header within header_timeout");
    // Nothing of these reached a worker or the access log.
    assert_eq!(access_log(&d), "");
    // The status page counts them, and shows its own request's worker
    // under the client the header names.
    let mut req = b"PROXY TCP4 192.0.2.50 127.0.0.1 5050 80\r\n".to_vec();
    req.extend_from_slice(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let page = parse_response(&send_from(lb, d.addr(), &req)).body_str();
    assert!(page.contains(", 3 PROXY header"), "{page}");
    assert!(page.contains("192.0.2.50:5050"), "{page}");
    assert_eq!(refusals_at_stop(d), 3);
}

#[test]
fn a_header_in_pieces_and_a_local_header() {
    let d = daemon("");
    let lb = Ipv4Addr::LOCALHOST;
    // The header arrives in two parts: the first waits in the gate, which
    // reads the whole header and hands the connection back.
    let header = v2_header(Some("192.0.2.44:5544".parse().unwrap()));
    let mut s = connect_from(lb, d.addr());
    let before = d.gate_fd_count();
    s.write_all(&header[..10]).unwrap();
    assert!(
        wait_for(DEADLINE, || d.gate_fd_count() > before),
        "the connection went to the gate"
    );
    s.write_all(&header[10..]).unwrap();
    s.write_all(GET_REMOTE).unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.body_str(), "192.0.2.44 5544\n");
    // v1 the same way, split inside an address.
    let mut s = connect_from(lb, d.addr());
    let before = d.gate_fd_count();
    s.write_all(b"PROXY TCP6 2001:db8::").unwrap();
    assert!(wait_for(DEADLINE, || d.gate_fd_count() > before));
    s.write_all(b"5 ::1 6000 80\r\nGET /remote HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    s.write_all(b"Connection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).body_str(), "2001:db8::5 6000\n");
    // LOCAL (a balancer's own health check): the connection's own address.
    let mut local = v2_header(None);
    local.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = parse_response(&send_from(lb, d.addr(), &local));
    assert_eq!(r.status, 200);
    wait_access(&d, &["127.0.0.1 - - [", "\"GET /health HTTP/1.1\" 200"]);
    wait_access(&d, &["192.0.2.44 - - [", "\"GET /remote HTTP/1.1\" 200"]);
    wait_access(&d, &["2001:db8::5 - - [", "\"GET /remote HTTP/1.1\" 200"]);
    assert_eq!(refusals_at_stop(d), 0);
}

#[test]
fn admission_counts_the_client_not_the_balancer() {
    let mut d = daemon("max_pending_per_source = 1");
    let lb = Ipv4Addr::LOCALHOST;
    let hdr = |ip: &str| format!("PROXY TCP4 {ip} 127.0.0.1 1000 80\r\n").into_bytes();
    // Half a head from client 192.0.2.5 waits in the gate: its share.
    let mut first = connect_from(lb, d.addr());
    first.write_all(&hdr("192.0.2.5")).unwrap();
    first.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    // A second from the same client through the same balancer, that has to
    // wait too, is refused with a 503 (once the first is counted).
    let mut again = hdr("192.0.2.5");
    again.extend_from_slice(b"GET / HTTP/1.1\r\nHost: t\r\n");
    assert!(wait_for(DEADLINE, || {
        let out = send_from(lb, d.addr(), &again);
        !out.is_empty() && parse_response(&out).status == 503
    }));
    // Another client through the same balancer is served.
    let mut other = hdr("192.0.2.6");
    other.extend_from_slice(GET_REMOTE);
    let r = parse_response(&send_from(lb, d.addr(), &other));
    assert_eq!(r.body_str(), "192.0.2.6 1000\n");
    // And the first is still served.
    first.write_all(b"Connection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut first).status, 200);
    d.wait_log("the last from 192.0.2.5: its source held its share of the gate");
}

#[test]
fn on_a_unix_socket_the_header_names_the_client() {
    let d = Daemon::with_config(
        r#"
[[listen]]
address = "unix:{dir}/http.sock"
proxy_protocol = true

[[route]]
prefix = "/remote"
cgi = { script = "{dir}/cgi/remote.sh" }
"#,
    )
    .dirs(&["cgi"])
    .start();
    let script = d.path("cgi/remote.sh");
    std::fs::write(&script, REMOTE_SH).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ask = |header: &[u8]| {
        let mut s = std::os::unix::net::UnixStream::connect(d.path("http.sock")).unwrap();
        s.write_all(header).unwrap();
        s.write_all(GET_REMOTE).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    let r = parse_response(&ask(b"PROXY TCP4 198.51.100.3 127.0.0.1 7000 80\r\n"));
    assert_eq!(r.body_str(), "198.51.100.3 7000\n");
    // LOCAL: the peer stays the Unix socket's (REMOTE_ADDR 127.0.0.1, as always there).
    let r = parse_response(&ask(&v2_header(None)));
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(ask(b"").is_empty(), "no header: refused");
}

#[test]
fn under_socket_activation_the_named_entry_decides() {
    if !have("systemd-socket-activate") {
        panic!(
            "systemd-socket-activate missing: install Debian's systemd package (scripts/test does)"
        );
    }
    let listener = loopback_listener();
    let addr = listener.local_addr().unwrap();
    let config = r#"
[[listen]]
address = "127.0.0.1:1"   # not bound: matched by name
name = "lb"
proxy_protocol = true
proxy_from = ["127.0.0.1"]

[[route]]
prefix = "/"
respond = { status = 200, body = "activated\n" }
"#;
    let mut d = Daemon::with_config(config)
        .listener(listener)
        .wrapper(&["systemd-socket-activate", "--fdname=lb"])
        .no_wait()
        .start();
    // The activator starts lbaws on a first connection (opened and closed:
    // a balancer's TCP check, not a refusal).
    assert!(wait_for(DEADLINE, || TcpStream::connect(addr).is_ok()));
    d.wait_log("info: ready:");
    let mut req = v2_header(Some("192.0.2.77:1234".parse().unwrap()));
    req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = parse_response(&send_from(Ipv4Addr::LOCALHOST, addr, &req));
    assert_eq!(r.body_str(), "activated\n");
    assert!(
        send_from(Ipv4Addr::LOCALHOST, addr, GET_REMOTE).is_empty(),
        "no header"
    );
    assert!(
        send_from(Ipv4Addr::new(127, 0, 0, 9), addr, &req).is_empty(),
        "not in proxy_from"
    );
    assert_eq!(refusals_at_stop(d), 2);
}
