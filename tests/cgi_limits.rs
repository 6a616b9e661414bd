//! CGI scripts as attackers and as crashing programs (issue 24): a fork
//! bomb, a memory hog, a CPU burner, a file filler, a stderr flood, a UDP
//! sender and a client of a local Unix socket, each held to its route's
//! limits and sandbox while a bystander client (a static file and a normal
//! script, in a loop) sees no error; a script killed in the middle of its
//! body, chunked, with a Content-Length and close-delimited, whose response
//! must never look complete; a worker killed mid-download, whose request
//! still gets its access line; a script that closes its stdout before its
//! header (issue 18, item 4); and scripts of a root lbaws without `[server]
//! user`, which run as nobody.
//!
//! The fork bomb is bounded by itself too (a tree of depth 8, at most 256
//! processes), so that no failure of the limit could hurt the machine.

mod util;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use util::*;

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An exponential fork bomb whose processes keep its stdout (no header
/// ever comes) and try again whenever a fork fails; bounded at a tree of
/// depth 8 (511 processes) should its limit fail.
const BOMB: &str = r#"#!/bin/bash
bomb() {
  [ "$1" -ge 8 ] && exec sleep 60
  while :; do
    bomb $(($1 + 1)) &
    bomb $(($1 + 1)) &
    wait
  done
}
bomb 0
"#;

/// Tries UDP to `udp` and a connection to the Unix socket `unix` (both from
/// QUERY_STRING), and says what happened.
const NET_PY: &str = r#"#!/usr/bin/python3
import os, socket, urllib.parse
q = dict(urllib.parse.parse_qsl(os.environ["QUERY_STRING"]))
out = []
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"exfiltrated", ("127.0.0.1", int(q["udp"])))
    out.append("udp: sent")
except OSError as e:
    out.append("udp: denied %d" % e.errno)
try:
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(q["unix"])
    out.append("unix: connected")
except OSError as e:
    out.append("unix: denied %d" % e.errno)
print("Content-Type: text/plain\n\n" + "\n".join(out))
"#;

/// lbaws as root without `[server] user` (so its scripts run as nobody),
/// or as whoever runs the tests, with an access log, a static page, and:
/// /cgi-bin/ with small limits, /long/ with the same scripts, the same
/// limits and a long timeout, /net/ granted UDP to `udp_port` and the Unix
/// socket `{dir}/sock`.
/// The UDP port /net/ grants where a test sends nothing there (the discard
/// port: nothing listens).
const UNUSED_UDP: u16 = 9;

fn daemon(udp_port: u16) -> Daemon {
    let limits = r#"limits = { processes = 8, memory = "64MiB", cpu = "1s", file_size = "64KiB" }, stderr = "1KiB""#;
    let config = format!(
        r#"
[[listen]]
address = "127.0.0.1:0"

[log]
access = "{{dir}}/access.log"

[limits]
keepalive_timeout = "30s"

[[route]]
prefix = "/"
static = {{ root = "{{dir}}/www" }}

[[route]]
prefix = "/cgi-bin/"
cgi = {{ dir = "{{dir}}/cgi", timeout = "3s", env = {{ OUT = "{{dir}}/out/big" }}, {limits} }}
sandbox = {{ write = ["{{dir}}/out"] }}

[[route]]
prefix = "/long/"
cgi = {{ dir = "{{dir}}/cgi", timeout = "60s", env = {{ OUT = "{{dir}}/out/big" }}, {limits} }}
sandbox = {{ write = ["{{dir}}/out"] }}

[[route]]
prefix = "/net/"
cgi = {{ dir = "{{dir}}/cgi", timeout = "3s" }}
sandbox = {{ udp_ports = [{udp_port}], connect_unix = ["{{dir}}/sock"] }}
"#
    );
    let d = Daemon::with_config(&config)
        .dirs(&["cgi", "www", "out"])
        .start();
    std::fs::set_permissions(d.path("out"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(d.path("www/index.html"), "home\n").unwrap();
    let cgi = d.path("cgi");
    // The bystander's script forks a program, as most shell scripts do.
    script(
        &cgi,
        "ok.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n/bin/echo ok\n",
    );
    script(&cgi, "bomb.sh", BOMB);
    script(
        &cgi,
        "hog.py",
        "#!/usr/bin/python3\nhog = bytearray(256 << 20)\nprint('Content-Type: text/plain\\n\\nallocated')\n",
    );
    script(&cgi, "burn.sh", "#!/bin/sh\nwhile :; do :; done\n");
    script(
        &cgi,
        "fill.sh",
        "#!/bin/sh\nexec head -c 1000000 /dev/zero > \"$OUT\"\n",
    );
    script(
        &cgi,
        "flood.py",
        "#!/usr/bin/python3\nimport sys\nsys.stderr.write('noise line\\n' * 200000)\nsys.stderr.flush()\nprint('Content-Type: text/plain\\n\\nflooded')\n",
    );
    script(&cgi, "net.py", NET_PY);
    // A body cut by the script's own death, with each framing.
    let body = "i=0\nwhile [ $i -lt 100 ]; do echo 'a line of the body, forty bytes long....'; i=$((i+1)); done\nkill -9 $$\n";
    script(
        &cgi,
        "cut.sh",
        &format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n{body}"),
    );
    script(
        &cgi,
        "cut-length.sh",
        &format!(
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 100000\\n\\n'\n{body}"
        ),
    );
    script(
        &cgi,
        "whole.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho all of it\n",
    );
    script(
        &cgi,
        "closes.sh",
        "#!/bin/sh\nexec >&-\nexec python3 -c 'import time; time.sleep(1000)' \"lbaws-mark-closed:$0\"\n",
    );
    script(&cgi, "closes-exits.sh", "#!/bin/sh\nexec >&-\nexit 3\n");
    // A large download from a script (a pipe, not a file: its worker sends
    // it all itself, never the gate).
    script(
        &cgi,
        "stream.sh",
        "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec head -c 268435456 /dev/zero\n",
    );
    script(
        &cgi,
        "id.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nid -u\n",
    );
    d
}

/// A client that keeps asking for a static page and a normal script, one
/// request at a time, until stopped; every answer must be right.
struct Bystander {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Bystander {
    fn start(addr: std::net::SocketAddr) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut done = 0;
            let mut errors = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for (path, want) in [("/index.html", "home\n"), ("/cgi-bin/ok.sh", "ok\n")] {
                    let mut s = connect(addr);
                    let req =
                        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                    let mut raw = Vec::new();
                    let r = s
                        .write_all(req.as_bytes())
                        .and_then(|()| s.read_to_end(&mut raw));
                    match r {
                        Ok(_) if raw.windows(4).any(|w| w == b"\r\n\r\n") => {
                            let r = parse_response(&raw);
                            if r.status != 200 || r.body_str() != want {
                                errors.push(format!("{path}: {} {:?}", r.status, r.body_str()));
                            }
                        }
                        Ok(_) => errors.push(format!("{path}: no response")),
                        Err(e) => errors.push(format!("{path}: {e}")),
                    }
                    done += 1;
                }
            }
            (done, errors)
        });
        Bystander { stop, thread }
    }

    /// Stop; it must have made requests, and seen no error.
    fn finish(self, d: &Daemon) {
        self.stop.store(true, Ordering::Relaxed);
        let (done, errors) = self.thread.join().unwrap();
        assert!(done > 0, "the bystander made no request");
        assert!(
            errors.is_empty(),
            "the bystander saw {} errors in {done} requests: {errors:?}\n{}",
            errors.len(),
            d.logs()
        );
    }
}

/// The process group of the process whose command line holds `marker`.
fn group_of(marker: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        if !String::from_utf8_lossy(&cmd).contains(marker) {
            return None;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(2)?
            .parse()
            .ok()
    })
}

/// Live processes (not zombies) in process group `pgid`.
fn count_group(pgid: i32) -> usize {
    let want = pgid.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2] == want
        })
        .count()
}

/// Is any process running whose command line contains `marker`?
fn process_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        !zombie
            && std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
    })
}

/// GET `path` in another thread; its response.
fn get_later(addr: std::net::SocketAddr, path: &str) -> std::thread::JoinHandle<Response> {
    let path = path.to_string();
    std::thread::spawn(move || get(addr, &path))
}

#[test]
fn a_fork_bomb_is_held_to_its_process_limit_and_the_others_see_no_error() {
    let mut d = daemon(UNUSED_UDP);
    let by = Bystander::start(d.addr());
    let answer = get_later(d.addr(), "/cgi-bin/bomb.sh");
    let marker = d.path("cgi/bomb.sh").display().to_string();
    let mut pgid = None;
    assert!(
        wait_for(DEADLINE, || {
            pgid = group_of(&marker);
            pgid.is_some()
        }),
        "the bomb never ran"
    );
    // Watch its tree until it is answered: never more than its limit.
    let mut most = 0;
    while !answer.is_finished() {
        most = most.max(count_group(pgid.unwrap()));
    }
    let r = answer.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.body_str());
    assert!(most <= 8, "the bomb had {most} processes at once (limit 8)");
    assert!(most >= 2, "the bomb never forked ({most})");
    // It tried for more: its shells said so on stderr.
    d.wait_log("fork: retry: Resource temporarily unavailable");
    assert!(
        wait_for(DEADLINE, || count_group(pgid.unwrap()) == 0),
        "the bomb outlived its request"
    );
    by.finish(&d);
}

#[test]
fn a_memory_hog_ends_its_request_and_the_others_see_no_error() {
    let mut d = daemon(UNUSED_UDP);
    let by = Bystander::start(d.addr());
    let r = get(d.addr(), "/cgi-bin/hog.py");
    assert_eq!(r.status, 502, "{}", r.body_str());
    d.wait_log("MemoryError");
    d.wait_log("exited with code 1 before a complete response header");
    by.finish(&d);
}

#[test]
fn cpu_and_file_size_limits_end_a_script_and_are_named() {
    let mut d = daemon(UNUSED_UDP);
    let r = get(d.addr(), "/long/burn.sh");
    assert_eq!(r.status, 502, "{}", r.body_str());
    d.wait_log("killed by SIGXCPU (its cpu limit, 1s) before a complete response header");
    let r = get(d.addr(), "/cgi-bin/fill.sh");
    assert_eq!(r.status, 502, "{}", r.body_str());
    d.wait_log("killed by SIGXFSZ (its file_size limit, 65536 bytes)");
    let written = std::fs::metadata(d.path("out/big")).unwrap().len();
    assert_eq!(written, 65536);
}

#[test]
fn a_stderr_flood_reaches_the_log_up_to_its_limit_and_one_line_says_the_rest() {
    let mut d = daemon(UNUSED_UDP);
    let by = Bystander::start(d.addr());
    let r = get(d.addr(), "/cgi-bin/flood.py");
    assert_eq!((r.status, r.body_str().as_str()), (200, "flooded\n"));
    d.wait_log("lines) dropped: over the route's stderr limit of 1024 bytes");
    // 1 KiB of 11-byte lines.
    let logged = d.count_log("noise line");
    assert!((90..=94).contains(&logged), "{logged} lines logged");
    let line = d
        .logs()
        .lines()
        .find(|l| l.contains("dropped: over"))
        .unwrap()
        .to_string();
    let dropped: u64 = line
        .split(" more bytes of stderr (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(dropped, 200_000 - logged as u64, "{line}");
    by.finish(&d);
}

#[test]
fn udp_and_unix_sockets_only_where_the_route_grants_them() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let port = udp.local_addr().unwrap().port();
    let d = daemon(port);
    let sock = d.path("sock");
    let unix = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    unix.set_nonblocking(true).unwrap();
    // Writable (connectable) by the scripts' user.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let by = Bystander::start(d.addr());
    let query = format!("udp={port}&unix={}", sock.display());
    let r = get(d.addr(), &format!("/cgi-bin/net.py?{query}"));
    assert_eq!(
        r.body_str(),
        format!(
            "udp: denied {}\nunix: denied {}\n",
            libc::EPERM,
            libc::EPERM
        )
    );
    // Nothing arrived (the script answered after its attempts; loopback
    // delivers at once).
    let mut buf = [0u8; 64];
    assert!(udp.recv_from(&mut buf).is_err());
    assert!(unix.accept().is_err());
    // Granted: both work.
    let r = get(d.addr(), &format!("/net/net.py?{query}"));
    assert_eq!(r.body_str(), "udp: sent\nunix: connected\n");
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"exfiltrated");
    assert!(unix.accept().is_ok());
    by.finish(&d);
}

/// curl's exit code for `url` (with `args`), and what it received.
fn curl_code(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "15", "-o", "-"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_script_killed_mid_body_never_looks_complete() {
    let mut d = daemon(UNUSED_UDP);
    let by = Bystander::start(d.addr());
    let base = format!("http://{}", d.addr());
    // The control: a whole body is whole.
    let (code, body) = curl_code(&[&format!("{base}/cgi-bin/whole.sh")]);
    assert_eq!((code, body.as_str()), (0, "all of it\n"));
    // Chunked: no last chunk, and the connection closes (curl 18: "transfer
    // closed with outstanding read data remaining").
    let (code, body) = curl_code(&[&format!("{base}/cgi-bin/cut.sh")]);
    assert_eq!(code, 18, "{body}");
    assert!(body.starts_with("a line of the body"), "{body}");
    // The same on the wire: chunks, then the end of the connection.
    let mut s = connect(d.addr());
    s.write_all(b"GET /cgi-bin/cut.sh HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a last chunk was sent: {text}"
    );
    // With a Content-Length: it closes short (curl 18 too).
    let (code, body) = curl_code(&[&format!("{base}/cgi-bin/cut-length.sh")]);
    assert_eq!(code, 18, "{body}");
    // Close-delimited (HTTP/1.0): the connection is reset, not closed
    // (curl 56: "Recv failure: Connection reset by peer").
    let (code, _) = curl_code(&["--http1.0", &format!("{base}/cgi-bin/cut.sh")]);
    assert_eq!(code, 56);
    // Each is logged with its status, the bytes sent, and "cut".
    let access = || std::fs::read_to_string(d.path("access.log")).unwrap_or_default();
    assert!(wait_for(DEADLINE, || access()
        .lines()
        .filter(|l| l.contains("/cgi-bin/cut") && l.contains("\" 200 ") && l.ends_with(" cut"))
        .count()
        == 4));
    let whole = access()
        .lines()
        .find(|l| l.contains("/cgi-bin/whole.sh"))
        .map(str::to_string);
    assert!(
        whole.as_ref().is_some_and(|l| !l.ends_with(" cut")),
        "{whole:?}"
    );
    d.wait_log("killed by SIGKILL after");
    by.finish(&d);
}

#[test]
fn a_worker_killed_mid_download_still_gets_its_access_line() {
    let d = daemon(UNUSED_UDP);
    // A large download that the client stops reading (from a script: a
    // file would be handed to the gate once the client is slow).
    let mut s = connect(d.addr());
    s.write_all(b"GET /long/stream.sh HTTP/1.1\r\nHost: t\r\nUser-Agent: slow\r\n\r\n")
        .unwrap();
    let mut some = [0u8; 65536];
    s.read_exact(&mut some).unwrap();
    d.wait_children(1);
    let worker = d.children()[0].0;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let access = || std::fs::read_to_string(d.path("access.log")).unwrap_or_default();
    assert!(
        wait_for(DEADLINE, || access()
            .contains("\"GET /long/stream.sh HTTP/1.1\" 200 ")),
        "no access line for the killed worker's request:\n{}\n{}",
        access(),
        d.logs()
    );
    let line = access()
        .lines()
        .find(|l| l.contains("/long/stream.sh"))
        .unwrap()
        .to_string();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.ends_with("\"-\" \"-\" cut"), "{line}");
    let bytes: u64 = line
        .split("\" 200 ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // What the worker had counted when it was killed: a send under way
    // (up to 512 KiB at a time) is not counted yet, so it may be less than
    // the client got; never the whole file.
    assert!(bytes < 256 << 20, "{line}");
}

#[test]
fn a_script_that_closes_stdout_before_its_header_is_answered_by_its_timeout() {
    let mut d = daemon(UNUSED_UDP);
    // Closed and still running: 504 at the route's timeout (3 s, not the
    // 1000 s it sleeps), and it is ended.
    let r = get(d.addr(), "/cgi-bin/closes.sh");
    assert_eq!(r.status, 504, "{}", r.body_str());
    d.wait_log("closed its output before a complete response header and is still running");
    let marker = format!("lbaws-mark-closed:{}", d.path("cgi/closes.sh").display());
    assert!(
        wait_for(DEADLINE, || !process_with(&marker)),
        "the script outlived its request"
    );
    // Closed and gone: 502 at once, with how it ended.
    let r = get(d.addr(), "/cgi-bin/closes-exits.sh");
    assert_eq!(r.status, 502, "{}", r.body_str());
    d.wait_log("closes-exits.sh[");
    d.wait_log("exited with code 3 before a complete response header");
    d.wait_no_workers();
}

#[test]
fn scripts_of_a_root_lbaws_without_a_user_run_as_nobody_and_lbaws_says_so() {
    let mut d = daemon(UNUSED_UDP);
    let r = get(d.addr(), "/cgi-bin/id.sh");
    let uid = nix::unistd::geteuid().as_raw();
    if is_root() {
        assert_eq!(r.body_str().trim(), "65534");
        d.wait_log("scripts run as nobody (uid 65534, gid 65534): lbaws runs as root without [server] user");
    } else {
        // Not root: scripts run as lbaws's own user (seen from their user
        // namespace, which maps no id, as the overflow id 65534).
        assert_eq!(r.body_str().trim(), "65534", "uid {uid}");
        assert!(!d.logs().contains("scripts run as nobody"));
    }
    // `lbaws check` says which way limits are enforced, and as whom.
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(d.path("config.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("CGI limits: rlimits (") || text.contains("CGI limits: cgroup v2"),
        "{text}"
    );
    assert_eq!(text.contains("scripts run as nobody"), is_root(), "{text}");
    assert!(
        text.contains("limits: scripts of /cgi-bin/: processes 8, memory 64MiB, cpu 1s, open_files 1024, file_size 64KiB; stderr: 1KiB logged per request"),
        "{text}"
    );
    assert!(
        text.contains("UDP, any port (asked: ") && text.contains("Unix sockets, any path (asked: "),
        "{text}"
    );
}
