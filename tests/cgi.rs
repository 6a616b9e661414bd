//! CGI/1.1: meta-variables, stdin, descriptors and signals of the script, the
//! response (Status, Location, framing, nph-), every failure, no zombie and
//! no stray process, and a WSGI application through wsgiref's CGIHandler.

mod util;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use util::*;

/// Prints its environment, stdin and working directory as `KEY=VALUE` lines.
const ENV_PY: &str = r#"#!/usr/bin/env python3
import os, sys
data = sys.stdin.buffer.read()
out = ["%s=%s" % (k, v) for k, v in sorted(os.environ.items())]
out.append("STDIN=" + data.decode("utf-8", "replace"))
out.append("CWD=" + os.getcwd())
body = ("\n".join(out) + "\n").encode()
sys.stdout.buffer.write(b"Content-Type: text/plain\r\nX-Reflector: yes\r\n\r\n" + body)
"#;

/// The shell's own descriptors and signal state.
/// The shell reports its own signal state, then execs Python to list the
/// descriptors an exec'd program has (the shell keeps its script open on a
/// close-on-exec fd of its own, so it cannot list them itself).
const FDS_SH: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\n\n'
# A builtin loop, not grep: dash blocks every signal around the vfork that
# starts a command, and grep could read that mask before it is cleared.
while IFS= read -r l; do case $l in SigBlk:*|SigIgn:*) printf '%s\n' "$l";; esac; done < /proc/$$/status
exec /usr/bin/python3 -c '
import os
fds = [f for f in os.listdir("/proc/self/fd") if os.path.exists("/proc/self/fd/" + f)]
print("fds", " ".join(sorted(fds, key=int)))'
"#;

/// What the kernel says the program was exec'd as (`AT_EXECFN`: the path,
/// or `/dev/fd/N` for a descriptor), `argv[0]` and its descriptors. As a
/// script (`#!`), or as the program a copy of python3 reads from stdin.
const EXECFN_PY: &str = r#"#!/usr/bin/python3
import ctypes, os, sys
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_char_p
fds = [f for f in os.listdir("/proc/self/fd") if os.path.exists("/proc/self/fd/" + f)]
print("Content-Type: text/plain\n")
print("execfn", libc.getauxval(31).decode())
print("argv0", sys.argv[0])
print("fds", " ".join(sorted(fds, key=int)))
print("cwd", os.getcwd())
"#;

/// Echoes its stdin, and says what it is (`X-Stdin:`, the target of
/// /proc/self/fd/0: a memfd, or an unlinked file in temp_dir).
const STDIN_PY: &str = r#"#!/usr/bin/env python3
import os, sys
where = os.readlink("/proc/self/fd/0").encode()
data = sys.stdin.buffer.read()
sys.stdout.buffer.write(b"Content-Type: application/octet-stream\r\nX-Stdin: " + where + b"\r\n\r\n" + data)
"#;

fn script(dir: &Path, name: &str, body: &str, mode: u32) {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn daemon(extra: &str) -> Daemon {
    let config = format!(
        r#"
[server]
temp_dir = "{{dir}}"

[[listen]]
address = "127.0.0.1:0"

[log]
level = "info"

[limits]
keepalive_timeout = "30s"

[[route]]
prefix = "/"
static = {{ root = "{{dir}}/www" }}

[[route]]
prefix = "/cgi-bin/"
cgi = {{ dir = "{{dir}}/cgi", timeout = "1s", env = {{ APP_ENV = "prod" }} }}

[[route]]
prefix = "/app"
cgi = {{ script = "{{dir}}/cgi/env.py" }}

[[route]]
prefix = "/fixed"
respond = {{ status = 200, body = "fixed route\n" }}
{extra}
"#
    );
    let d = Daemon::with_config(&config)
        .env("LBAWS_TEST_SECRET", "must-not-leak")
        .dirs(&["cgi", "www"])
        .start();
    let cgi = d.path("cgi");
    std::fs::create_dir_all(&cgi).unwrap();
    std::fs::create_dir_all(d.path("www")).unwrap();
    script(&cgi, "env.py", ENV_PY, 0o755);
    script(&cgi, "fds.sh", FDS_SH, 0o755);
    script(&cgi, "noexec.py", ENV_PY, 0o644);
    script(&cgi, "badinterp.cgi", "#!/nonexistent/interpreter\n", 0o755);
    script(
        &cgi,
        "exit3.sh",
        "#!/bin/sh\necho 'about to fail' >&2\nexit 3\n",
        0o755,
    );
    script(&cgi, "crash.sh", "#!/bin/sh\nkill -SEGV $$\n", 0o755);
    script(
        &cgi,
        "garbage.sh",
        "#!/bin/sh\nprintf 'this is not a header\\n\\nbody'\n",
        0o755,
    );
    script(&cgi, "slow.sh", "#!/bin/sh\nexec sleep 60\n", 0o755);
    // Markers in the command lines, so the tests can look for the processes.
    script(
        &cgi,
        "closes.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok\\n'\nexec >&- 2>&-\nexec python3 -c 'import time; time.sleep(1000)' \"lbaws-mark-closes:$0\"\n",
        0o755,
    );
    script(
        &cgi,
        "setsid.sh",
        "#!/bin/sh\nsetsid python3 -c 'import time; time.sleep(1000)' \"lbaws-mark-setsid:$0\" </dev/null >/dev/null 2>&1 &\nprintf 'Content-Type: text/plain\\n\\nforked\\n'\n",
        0o755,
    );
    script(
        &cgi,
        "sleeper.sh",
        "#!/bin/sh\nsetsid python3 -c 'import time; time.sleep(1000)' \"lbaws-mark-grandchild:$0\" </dev/null >/dev/null 2>&1 &\nexec python3 -c 'import time; time.sleep(1000)' \"lbaws-mark-sleeper:$0\"\n",
        0o755,
    );
    script(&cgi, "status.sh", "#!/bin/sh\nprintf 'Status: 201 Created\\nContent-Type: text/plain\\nX-Custom: yes\\nContent-Length: 3\\n\\nnew'\n", 0o755);
    script(
        &cgi,
        "stream.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho one\necho two\n",
        0o755,
    );
    script(
        &cgi,
        "local.sh",
        "#!/bin/sh\nprintf 'Location: /fixed\\n\\n'\n",
        0o755,
    );
    script(
        &cgi,
        "away.sh",
        "#!/bin/sh\nprintf 'Location: https://example.org/\\n\\n'\n",
        0o755,
    );
    script(
        &cgi,
        "nph-raw.sh",
        "#!/bin/sh\nprintf 'HTTP/1.1 299 Raw\\r\\nContent-Type: text/plain\\r\\n\\r\\nraw body'\n",
        0o755,
    );
    script(&cgi, "forever.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nwhile :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done\n", 0o755);
    script(
        &cgi,
        "interim.sh",
        "#!/bin/sh\nprintf 'Status: 100 Continue\\nContent-Type: text/plain\\n\\nbody'\n",
        0o755,
    );
    // Bodyless statuses with framing and a body they must not have.
    script(
        &cgi,
        "no-content.sh",
        "#!/bin/sh\nprintf 'Status: 204 No Content\\nContent-Length: 5\\nTransfer-Encoding: chunked\\nX-Done: yes\\n\\nhello'\n",
        0o755,
    );
    script(
        &cgi,
        "not-modified.sh",
        "#!/bin/sh\nprintf 'Status: 304 Not Modified\\nContent-Length: 12\\nETag: \"v1\"\\n\\nnot modified'\n",
        0o755,
    );
    script(&cgi, "execfn.py", EXECFN_PY, 0o755);
    script(&cgi, "stdin.py", STDIN_PY, 0o755);
    script(&cgi, "logs.sh", "#!/bin/sh\necho 'first stderr line' >&2\necho 'second stderr line' >&2\nprintf 'Content-Type: text/plain\\n\\nok'\n", 0o755);
    d
}

/// GET (or another method) through the keep-alive client; returns the reflector's variables.
fn vars(r: &Response) -> BTreeMap<String, String> {
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body_str());
    let mut m = BTreeMap::new();
    let text = r.body_str();
    let (env, rest) = text.split_once("STDIN=").unwrap();
    for line in env.lines() {
        if let Some((k, v)) = line.split_once('=') {
            m.insert(k.to_string(), v.to_string());
        }
    }
    let (stdin, cwd) = rest.rsplit_once("\nCWD=").unwrap();
    m.insert("STDIN".into(), stdin.to_string());
    m.insert("CWD".into(), cwd.trim_end().to_string());
    m
}

/// Read one response whose body may be chunked.
fn read_any(c: &mut Client) -> Response {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut c.reader, &mut line).unwrap();
        assert!(!line.is_empty(), "closed; head so far {head:?}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut r = Response {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        head,
        body: Vec::new(),
    };
    if r.header("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let mut size = String::new();
            std::io::BufRead::read_line(&mut c.reader, &mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            c.reader.read_exact(&mut chunk).unwrap();
            assert_eq!(&chunk[n..], b"\r\n");
            if n == 0 {
                break;
            }
            r.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = r.header("content-length") {
        r.body = vec![0; len.parse().unwrap()];
        c.reader.read_exact(&mut r.body).unwrap();
    } else {
        c.reader.read_to_end(&mut r.body).unwrap();
    }
    r
}

fn request(c: &mut Client, raw: &str) -> Response {
    c.send(raw.as_bytes());
    read_any(c)
}

#[test]
fn meta_variables_for_a_plain_get() {
    let d = daemon("");
    let port = d.addr().port();
    let mut c = Client::new(d.addr());
    let v = vars(&request(
        &mut c,
        &format!(
            "GET /cgi-bin/env.py HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: t/1\r\n\r\n"
        ),
    ));
    let want = [
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        ("SERVER_NAME", "localhost".to_string()),
        ("SERVER_PORT", port.to_string()),
        ("SERVER_PROTOCOL", "HTTP/1.1".to_string()),
        ("REQUEST_METHOD", "GET".to_string()),
        ("SCRIPT_NAME", "/cgi-bin/env.py".to_string()),
        (
            "SCRIPT_FILENAME",
            d.path("cgi/env.py").display().to_string(),
        ),
        ("QUERY_STRING", String::new()),
        ("REQUEST_URI", "/cgi-bin/env.py".to_string()),
        ("REMOTE_ADDR", "127.0.0.1".to_string()),
        ("DOCUMENT_ROOT", d.path("www").display().to_string()),
        ("HTTP_HOST", format!("localhost:{port}")),
        ("HTTP_USER_AGENT", "t/1".to_string()),
        ("APP_ENV", "prod".to_string()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("CWD", d.path("cgi").display().to_string()),
        ("STDIN", String::new()),
    ];
    for (k, val) in want {
        assert_eq!(v.get(k), Some(&val), "{k} in {v:#?}");
    }
    assert!(v["SERVER_SOFTWARE"].starts_with("lbaws/"));
    assert!(v["REMOTE_PORT"].parse::<u16>().is_ok());
    for absent in [
        "PATH_INFO",
        "PATH_TRANSLATED",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "LBAWS_TEST_SECRET",
        "LISTEN_FDS",
        "NOTIFY_SOCKET",
        "HOME",
    ] {
        assert!(!v.contains_key(absent), "{absent} must not be set: {v:#?}");
    }
    // Only the meta-variables, HTTP_*, PATH and the configured env: nothing else leaks.
    let python_adds = ["LC_CTYPE"];
    for k in v.keys() {
        let known = k.starts_with("HTTP_")
            || [
                "GATEWAY_INTERFACE",
                "SERVER_SOFTWARE",
                "SERVER_NAME",
                "SERVER_PORT",
                "SERVER_PROTOCOL",
                "REQUEST_METHOD",
                "REQUEST_URI",
                "QUERY_STRING",
                "SCRIPT_NAME",
                "SCRIPT_FILENAME",
                "DOCUMENT_ROOT",
                "REMOTE_ADDR",
                "REMOTE_PORT",
                "PATH",
                "APP_ENV",
                "STDIN",
                "CWD",
            ]
            .contains(&k.as_str())
            || python_adds.contains(&k.as_str());
        assert!(known, "unexpected variable {k}");
    }
    // The custom header from the script came through, on a kept-alive connection.
    let again = request(
        &mut c,
        "GET /cgi-bin/env.py?a=1&b=%20x HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_eq!(again.header("x-reflector").as_deref(), Some("yes"));
    assert_eq!(vars(&again)["QUERY_STRING"], "a=1&b=%20x");
    assert_eq!(vars(&again)["SERVER_NAME"], "h");
}

#[test]
fn path_info_below_a_script() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let v = vars(&request(
        &mut c,
        "GET /cgi-bin/env.py/extra/p%20ath HTTP/1.1\r\nHost: h\r\n\r\n",
    ));
    assert_eq!(v["SCRIPT_NAME"], "/cgi-bin/env.py");
    assert_eq!(v["PATH_INFO"], "/extra/p ath");
    assert_eq!(
        v["PATH_TRANSLATED"],
        format!("{}/extra/p ath", d.path("www").display())
    );
    // One script for a subtree.
    let v = vars(&request(&mut c, "GET /app/x/y HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert_eq!(
        (v["SCRIPT_NAME"].as_str(), v["PATH_INFO"].as_str()),
        ("/app", "/x/y")
    );
    let v = vars(&request(&mut c, "GET /app HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert_eq!(v["SCRIPT_NAME"], "/app");
    assert!(!v.contains_key("PATH_INFO"));
    assert_eq!(
        request(&mut c, "GET /apples HTTP/1.1\r\nHost: h\r\n\r\n").status,
        404
    );
}

#[test]
fn request_bodies_headers_and_methods() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let v = vars(&request(&mut c, "POST /cgi-bin/env.py HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nhello=world"));
    assert_eq!(
        (v["CONTENT_LENGTH"].as_str(), v["STDIN"].as_str()),
        ("11", "hello=world")
    );
    assert_eq!(v["CONTENT_TYPE"], "application/x-www-form-urlencoded");
    let v = vars(&request(&mut c, "POST /cgi-bin/env.py HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"));
    assert_eq!(
        (v["CONTENT_LENGTH"].as_str(), v["STDIN"].as_str()),
        ("7", "abcdefg")
    );
    assert!(!v.contains_key("HTTP_TRANSFER_ENCODING"));
    let v = vars(&request(&mut c, "GET /cgi-bin/env.py HTTP/1.1\r\nHost: h\r\nX-Dup: a\r\nX-Dup: b\r\nCookie: a=1\r\nCookie: b=2\r\nProxy: http://evil.example/\r\n\r\n"));
    assert_eq!(v["HTTP_X_DUP"], "a, b");
    assert_eq!(v["HTTP_COOKIE"], "a=1; b=2");
    assert!(!v.contains_key("HTTP_PROXY"), "httpoxy");
    for m in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let v = vars(&request(
            &mut c,
            &format!("{m} /cgi-bin/env.py HTTP/1.1\r\nHost: h\r\n\r\n"),
        ));
        assert_eq!(v["REQUEST_METHOD"], m);
    }
    // HEAD: the script runs, the body is dropped.
    c.send(b"HEAD /cgi-bin/stream.sh HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read(true);
    assert_eq!(r.status, 200);
    assert_eq!(
        c.get("/fixed").body_str(),
        "fixed route\n",
        "connection still in step after HEAD"
    );
}

#[test]
fn script_sees_only_fds_0_to_2_and_default_signals() {
    let d = daemon("");
    let r = get(d.addr(), "/cgi-bin/fds.sh");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let text = r.body_str();
    assert!(text.contains("fds 0 1 2\n"), "{text}");
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");
}

#[test]
fn responses_status_location_framing_nph() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let r = request(&mut c, "GET /cgi-bin/status.sh HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (201, "new"));
    assert_eq!(r.header("x-custom").as_deref(), Some("yes"));
    assert_eq!(r.header("content-length").as_deref(), Some("3"));
    // No length from the script: chunked on a persistent 1.1 connection.
    let r = request(&mut c, "GET /cgi-bin/stream.sh HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.body_str(), "one\ntwo\n");
    // Local Location: served internally; absolute: a 302 to the client.
    let r = request(&mut c, "GET /cgi-bin/local.sh HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (200, "fixed route\n"));
    let r = request(&mut c, "GET /cgi-bin/away.sh HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (302, Some("https://example.org/"))
    );
    // HTTP/1.0: close-delimited.
    let r = exchange(d.addr(), b"GET /cgi-bin/stream.sh HTTP/1.0\r\n\r\n");
    assert_eq!(
        (r.body_str().as_str(), r.header("connection").as_deref()),
        ("one\ntwo\n", Some("close"))
    );
    // nph-: passed through as the script wrote it.
    let mut s = connect(d.addr());
    s.write_all(b"GET /cgi-bin/nph-raw.sh HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert_eq!(
        raw,
        "HTTP/1.1 299 Raw\r\nContent-Type: text/plain\r\n\r\nraw body"
    );
}

#[test]
fn failures_each_with_their_status() {
    let mut d = daemon("");
    let cases = [
        ("/cgi-bin/missing.py", 404),
        ("/cgi-bin/", 403),
        ("/cgi-bin/noexec.py", 403),
        ("/cgi-bin/.hidden", 403),
        ("/cgi-bin/badinterp.cgi", 500),
        ("/cgi-bin/exit3.sh", 502),
        ("/cgi-bin/crash.sh", 502),
        ("/cgi-bin/garbage.sh", 502),
        ("/cgi-bin/slow.sh", 504),
    ];
    for (path, status) in cases {
        let r = get(d.addr(), path);
        assert_eq!(r.status, status, "{path}: {}", r.body_str());
    }
    d.wait_log("exit3.sh");
    let logs = d.logs();
    assert!(
        logs.contains("exit3.sh")
            && logs.contains("exited with code 3 before a complete response header"),
        "{logs}"
    );
    assert!(
        logs.contains("about to fail"),
        "stderr of the script is logged:\n{logs}"
    );
    assert!(
        logs.contains("crash.sh") && logs.contains("killed by SIGSEGV"),
        "{logs}"
    );
    assert!(logs.contains("malformed response header"), "{logs}");
    assert!(logs.contains("no response header within"), "{logs}");
    assert!(logs.contains("badinterp.cgi: exec: ENOENT"), "{logs}");
    // The slow script was terminated, not left behind.
    let slow = d.path("cgi/slow.sh").display().to_string();
    assert!(
        wait_for(DEADLINE, || !process_with(&slow)),
        "slow.sh still running"
    );
}

#[test]
fn stderr_lines_are_logged_with_script_and_pid() {
    let mut d = daemon("");
    assert_eq!(get(d.addr(), "/cgi-bin/logs.sh").body_str(), "ok");
    d.wait_log("second stderr line");
    let line = d
        .logs()
        .lines()
        .find(|l| l.contains("first stderr line"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("cgi {}[", d.path("cgi/logs.sh").display())),
        "{line}"
    );
}

/// Is any process running whose command line contains `marker`?
fn process_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
            && !zombie
            || (zombie && stat.contains(marker))
    })
}

#[test]
fn client_disconnect_kills_and_reaps_the_script() {
    let d = daemon("");
    let mut s = connect(d.addr());
    s.write_all(b"GET /cgi-bin/forever.sh HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut some = [0u8; 4096];
    s.read_exact(&mut some).unwrap();
    let marker = d.path("cgi/forever.sh").display().to_string();
    assert!(
        process_with(&marker),
        "the script is running while it streams"
    );
    drop(s);
    assert!(
        wait_for(DEADLINE, || !process_with(&marker)),
        "script left running"
    );
    d.wait_no_workers();
}

#[test]
fn two_hundred_concurrent_cgi_requests_leave_nothing_behind() {
    let d = daemon("");
    let addr = d.addr();
    let threads: Vec<_> = (0..200)
        .map(|i| {
            std::thread::spawn(move || {
                // Eight client hosts, 25 requests each: under the per-source limit.
                let mut c = connect_from(source(i % 8), addr);
                c.write_all(
                    format!("GET /cgi-bin/stream.sh?{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .unwrap();
                let r = read_response(&mut c);
                (r.status, r.body_str())
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), (200, "one\ntwo\n".to_string()));
    }
    d.wait_no_workers();
    // No zombie and no orphan: nothing whose parent was a worker survives, and
    // no stream.sh is running anywhere.
    assert!(!process_with(
        &d.path("cgi/stream.sh").display().to_string()
    ));
}

#[test]
fn wsgi_application_through_cgihandler() {
    let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wsgi/hello.cgi");
    let d = daemon(&format!(
        "[[route]]\nprefix = \"/hello\"\ncgi = {{ script = \"{}\" }}\n",
        wrapper.display()
    ));
    let mut c = Client::new(d.addr());
    let r = request(&mut c, "GET /hello/lbaws HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "Hello lbaws from a simple WSGI application!\n"),
        "{}",
        d.logs()
    );
    let r = request(&mut c, "POST /hello HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 20\r\n\r\nname=Ada&lang=Python");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "You posted:\nlang=Python\nname=Ada\n")
    );
    // And through the real curl.
    let out = curl(&["-s", "--data", "x=1", &format!("http://{}/hello", d.addr())]);
    assert_eq!(out, "You posted:\nx=1\n");
}

#[test]
fn a_script_that_closes_stdout_and_sleeps_ends_with_its_request() {
    let d = daemon("");
    let r = get(d.addr(), "/cgi-bin/closes.sh");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok\n"));
    assert!(
        wait_for(DEADLINE, || !process_with(&mark(&d, "closes"))),
        "the script outlived its request"
    );
    d.wait_no_workers();
}

#[test]
fn a_script_that_detaches_a_daemon_leaves_nothing_behind() {
    // setsid and a fork: out of the script's process group, orphaned when
    // the script exits. It came back to the worker (a subreaper), which ends
    // it with the request.
    let d = daemon("");
    let r = get(d.addr(), "/cgi-bin/setsid.sh");
    assert_eq!((r.status, r.body_str().as_str()), (200, "forked\n"));
    assert!(
        wait_for(DEADLINE, || !process_with(&mark(&d, "setsid"))),
        "the script's daemon outlived the request"
    );
    d.wait_no_workers();
}

/// Start sleeper.sh (it leaves a detached grandchild, then sleeps itself)
/// and wait until both run.
fn start_sleeper(d: &Daemon) -> std::net::TcpStream {
    let mut s = connect(d.addr());
    s.write_all(b"GET /cgi-bin/sleeper.sh HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    assert!(wait_for(DEADLINE, || process_with(&mark(d, "sleeper"))
        && process_with(&mark(d, "grandchild"))));
    s
}

/// The marker a test script puts in a command line: its name and its path,
/// unique to this daemon.
fn mark(d: &Daemon, what: &str) -> String {
    let script = if what == "grandchild" {
        "sleeper"
    } else {
        what
    };
    format!(
        "lbaws-mark-{what}:{}",
        d.path(&format!("cgi/{script}.sh")).display()
    )
}

#[test]
fn a_killed_worker_takes_its_script_and_what_it_left() {
    let d = daemon("");
    let _s = start_sleeper(&d);
    d.wait_children(1);
    let worker = d.children()[0].0;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_for(DEADLINE, || !process_with(&mark(&d, "sleeper"))
            && !process_with(&mark(&d, "grandchild"))),
        "the script or its descendant outlived the killed worker"
    );
    d.wait_no_workers();
}

#[test]
fn an_immediate_stop_ends_scripts_too() {
    let mut d = daemon("");
    let _s = start_sleeper(&d);
    d.signal(nix::sys::signal::Signal::SIGQUIT);
    assert_eq!(d.wait_exit(DEADLINE).code(), Some(0));
    assert!(
        wait_for(DEADLINE, || !process_with(&mark(&d, "sleeper"))
            && !process_with(&mark(&d, "grandchild"))),
        "a script outlived lbaws"
    );
}

#[test]
fn an_interim_status_from_a_script_is_a_502_and_the_connection_stays_in_step() {
    // Sent on, "100 Continue" would be taken as the forerunner of the real
    // answer: the client would wait for it, and the request pipelined behind
    // would never be answered.
    let mut d = daemon("");
    let mut c = Client::new(d.addr());
    c.send(
        b"GET /cgi-bin/interim.sh HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /fixed HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let r = c.read(false);
    assert_eq!(r.status, 502, "{}", r.head);
    let next = c.read(false);
    assert_eq!(
        (next.status, next.body_str().as_str()),
        (200, "fixed route\n"),
        "the pipelined request is answered"
    );
    d.wait_log("Status 100 is an interim response");
    assert!(d.logs().contains("interim.sh["), "{}", d.logs());
}

#[test]
fn a_204_or_304_from_a_script_has_no_body_and_no_framing() {
    // Whatever the script sent (a Content-Length, Transfer-Encoding, a
    // body), the response is the head alone, and the next request on the
    // connection is answered in step: no byte of the script's body is taken
    // for the start of the next response.
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let r = request_head_only(&mut c, "/cgi-bin/no-content.sh");
    assert_eq!(r.status, 204, "{}", r.head);
    assert_eq!(r.header("x-done").as_deref(), Some("yes"));
    let r = request_head_only(&mut c, "/cgi-bin/not-modified.sh");
    assert_eq!(r.status, 304, "{}", r.head);
    assert_eq!(r.header("etag").as_deref(), Some("\"v1\""));
    let next = c.get("/fixed");
    assert_eq!(
        (next.status, next.body_str().as_str()),
        (200, "fixed route\n")
    );
    // Pipelined: both answers, then the third, from one write.
    let mut c = Client::new(d.addr());
    c.send(
        b"GET /cgi-bin/no-content.sh HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /cgi-bin/not-modified.sh HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /fixed HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_eq!(c.read(false).status, 204);
    assert_eq!(c.read(false).status, 304);
    assert_eq!(c.read(false).body_str(), "fixed route\n");
}

/// GET `path` on a kept-alive connection and read a head that must come
/// without a body or any framing header.
fn request_head_only(c: &mut Client, path: &str) -> Response {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    let r = c.read(true);
    for framing in ["content-length", "transfer-encoding", "connection"] {
        assert_eq!(r.header(framing), None, "{framing} in\n{}", r.head);
    }
    r
}

#[test]
fn header_names_with_an_underscore_do_not_reach_scripts() {
    // X_Forwarded_For would become HTTP_X_FORWARDED_FOR too, and pass for
    // the header a proxy in front sets.
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let v = vars(&request(
        &mut c,
        "GET /cgi-bin/env.py HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\n\
         X-Forwarded-For: 192.0.2.1\r\nX_Other: y\r\n\r\n",
    ));
    assert_eq!(v["HTTP_X_FORWARDED_FOR"], "192.0.2.1");
    assert!(!v.contains_key("HTTP_X_OTHER"), "{v:#?}");
    let v = vars(&request(
        &mut c,
        "GET /cgi-bin/env.py HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n",
    ));
    assert!(!v.contains_key("HTTP_X_FORWARDED_FOR"), "{v:#?}");
}

/// The `key value` lines of a reflector's body.
fn lines(r: &Response) -> BTreeMap<String, String> {
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body_str());
    r.body_str()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn programs_run_from_the_checked_descriptor_and_scripts_by_their_path() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    // A program the kernel runs by itself (ELF: a copy of python3, which
    // runs the program it reads on stdin, the request body) is exec'd from
    // the descriptor that was checked: the kernel names it /dev/fd/N.
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    std::fs::copy(&python, d.path("cgi/python-elf")).unwrap();
    let body = EXECFN_PY.replace("#!/usr/bin/python3\n", "");
    let r = request(
        &mut c,
        &format!(
            "POST /cgi-bin/python-elf HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let elf = lines(&r);
    assert!(elf["execfn"].starts_with("/dev/fd/"), "{elf:?}");
    assert_eq!(elf["fds"], "0 1 2", "the checked descriptor closed on exec");
    assert_eq!(elf["cwd"], d.path("cgi").display().to_string());
    // A script with a #! line: its interpreter needs a path that opens, so
    // it runs by its path (checked to name the checked file still), with
    // the descriptor closed all the same and $0 the real path.
    let script = lines(&request(
        &mut c,
        "GET /cgi-bin/execfn.py HTTP/1.1\r\nHost: h\r\n\r\n",
    ));
    let path = d.path("cgi/execfn.py").display().to_string();
    assert_eq!(
        (script["execfn"].as_str(), script["argv0"].as_str()),
        (path.as_str(), path.as_str()),
        "{script:?}"
    );
    assert_eq!(script["fds"], "0 1 2");
    // Also through a symbolic link that stays below dir: resolved once,
    // run as what it resolved to.
    std::os::unix::fs::symlink("execfn.py", d.path("cgi/link.py")).unwrap();
    let linked = lines(&request(
        &mut c,
        "GET /cgi-bin/link.py HTTP/1.1\r\nHost: h\r\n\r\n",
    ));
    assert_eq!(linked["fds"], "0 1 2");
}

/// `n` bytes that a shifted or truncated copy would not match.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 11) as u8).collect()
}

fn post(c: &mut Client, path: &str, body: &[u8]) -> Response {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    c.send(&raw);
    read_any(c)
}

#[test]
fn request_bodies_up_to_the_threshold_stay_in_memory_larger_ones_go_to_temp_dir() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let temp = d.dir.path().display().to_string();
    // [limits] cgi_body_in_memory: 64 KiB by default.
    for (len, on_disk) in [(5, false), (65536, false), (65537, true), (3 << 20, true)] {
        let body = pattern(len);
        let r = post(&mut c, "/cgi-bin/stdin.py", &body);
        assert_eq!(r.status, 200, "{}", r.head);
        let stdin = r.header("x-stdin").unwrap();
        if on_disk {
            assert!(
                stdin.starts_with(&format!("{temp}/")) && stdin.ends_with(" (deleted)"),
                "{len} bytes: {stdin}"
            );
        } else {
            assert!(stdin.starts_with("/memfd:"), "{len} bytes: {stdin}");
        }
        assert!(r.body == body, "{len} bytes arrived changed");
    }
    // Chunked, decoded on its way to the file.
    let body = pattern(200_000);
    let mut raw =
        b"POST /cgi-bin/stdin.py HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for part in body.chunks(30_000) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    c.send(&raw);
    let r = read_any(&mut c);
    assert!(r.header("x-stdin").unwrap().starts_with(&temp));
    assert!(r.body == body, "a chunked body arrived changed");
    // Unlinked: nothing is left in the directory but what the test put there.
    let left: Vec<_> = std::fs::read_dir(d.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !["cgi", "www", "config.toml"].contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_temp_dir_that_cannot_be_used_is_refused_at_check_and_reload_and_500_if_it_goes_later() {
    let mut d = daemon("");
    let cfg = d.path("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let temp_line = format!("temp_dir = \"{}\"", d.dir.path().display());
    assert!(text.contains(&temp_line));
    let line = text.lines().position(|l| l == temp_line).unwrap() + 1;
    let check = |text: &str| {
        write_config(&cfg, text);
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing = d.path("missing");
    let regular = d.path("config.toml");
    for (dir, why) in [
        (missing.display().to_string(), "no such directory"),
        (regular.display().to_string(), "not a directory"),
        ("relative/dir".to_string(), "must be an absolute path"),
    ] {
        let (code, stderr) = check(&text.replace(&temp_line, &format!("temp_dir = \"{dir}\"")));
        assert_eq!(code, Some(78), "{dir}: {stderr}");
        assert!(
            stderr.starts_with(&format!("{}:{line}:12: ", cfg.display())) && stderr.contains(why),
            "{dir}: {stderr}"
        );
    }
    if is_root() {
        // Started as root to become another user: that user must be able
        // to write there (the test's directory is root's alone).
        let as_nobody = text.replacen("[server]\n", "[server]\nuser = \"nobody\"\n", 1);
        let (code, stderr) = check(&as_nobody);
        assert_eq!(code, Some(78), "{stderr}");
        assert!(
            stderr.starts_with(&format!("{}:{}:12: ", cfg.display(), line + 1))
                && stderr.contains("not writable by user nobody"),
            "{stderr}"
        );
    }

    // A reload to a directory that exists: accepted. To one that does not:
    // refused, located, and the running configuration keeps serving.
    let spool = d.path("spool");
    std::fs::create_dir(&spool).unwrap();
    let to_spool = text.replace(&temp_line, &format!("temp_dir = \"{}\"", spool.display()));
    write_config(&cfg, &to_spool);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("reloaded configuration");
    write_config(
        &cfg,
        &text.replace(&temp_line, &format!("temp_dir = \"{}\"", missing.display())),
    );
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("reload failed");
    assert!(
        d.logs()
            .contains(&format!("{}:{line}:12: temp_dir", cfg.display())),
        "{}",
        d.logs()
    );
    // The directory goes while lbaws runs: a body too large for memory is
    // answered 500 (logged), a small one still reaches its script.
    std::fs::remove_dir(&spool).unwrap();
    let mut c = Client::new(d.addr());
    let small = post(&mut c, "/cgi-bin/stdin.py", b"small");
    assert_eq!((small.status, small.body_str().as_str()), (200, "small"));
    let r = post(&mut c, "/cgi-bin/stdin.py", &pattern(100_000));
    assert_eq!(r.status, 500, "{}", r.head);
    d.wait_log("cannot keep it in");
}
