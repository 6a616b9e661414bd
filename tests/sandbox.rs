//! The sandbox per worker, proved from inside: CGI scripts used as
//! attackers against a concurrent request's script, the supervisor and
//! another worker, the files outside their route, /tmp and the network;
//! the same script with its route widened; and (test builds only) probes
//! run by a static worker right after it entered its sandbox.
//!
//! As root (CI), lbaws drops to `nobody` here, as the package runs it as
//! `lbaws`: workers and scripts of one user, which without the sandbox
//! may reach each other (the control case, `mode = "off"`, shows every
//! attack working, but for ptrace and /proc/PID/environ where the scripts'
//! own user namespaces, made for their process limit, refuse those too),
//! and with it cannot.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use util::*;

/// Holds a request open with a secret in its environment (`HTTP_COOKIE`),
/// after it printed its pid.
const VICTIM: &str =
    "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"pid $$\"\nexec sleep 60\n";

/// Tries each attack and prints one line per attack: `NAME: allowed` or
/// `NAME: denied ERRNO`.
const ATTACKER: &str = r#"#!/usr/bin/env python3
import ctypes, errno, os, socket, sys, urllib.parse
sys.dont_write_bytecode = True
q = dict(urllib.parse.parse_qsl(os.environ.get("QUERY_STRING", "")))
out = []
def probe(name, f):
    try:
        f()
        out.append(name + ": allowed")
    except OSError as e:
        out.append(name + ": denied " + errno.errorcode.get(e.errno, str(e.errno)))
def environ():
    with open("/proc/%s/environ" % q["victim"], "rb") as fh:
        if b"session=s3cr3t" not in fh.read():
            raise OSError(errno.ENODATA, "no cookie")
def ptrace():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, int(q["victim"]), 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    libc.ptrace(17, int(q["victim"]), 0, 0)
def read_outside():
    with open(q["outside"]) as fh:
        fh.read()
def write_tmp():
    with open(q["tmp"] + "/written-by-a-script", "w") as fh:
        fh.write("x")
def connect():
    socket.create_connection(("127.0.0.1", int(q["port"])), timeout=5).close()
probe("environ", environ)
probe("ptrace", ptrace)
probe("kill-supervisor", lambda: os.kill(int(q["supervisor"]), 0))
probe("kill-worker", lambda: os.kill(int(q["worker"]), 0))
probe("read-outside", read_outside)
probe("write-tmp", write_tmp)
probe("connect", connect)
sys.stdout.write("Content-Type: text/plain\r\n\r\n" + "\n".join(out) + "\n")
"#;

/// As root, serve as `nobody` (see the module docs).
fn as_nobody() -> &'static str {
    match is_root() {
        true => "[server]\nuser = \"nobody\"",
        false => "",
    }
}

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// lbaws with `[sandbox] mode`, CGI at /cgi-bin/ and the same scripts at
/// /wide/ with `widen` as that route's sandbox; the test dir has
/// `outside/secret.txt` (world-readable, in no route) and `tmp/`.
fn daemon(mode: &str, widen: &str, probes: &str) -> Daemon {
    let config = format!(
        r#"
{server}

[[listen]]
address = "127.0.0.1:0"

[sandbox]
mode = "{mode}"

[[route]]
prefix = "/cgi-bin/"
cgi = {{ dir = "{{dir}}/cgi", timeout = "5s" }}

[[route]]
prefix = "/wide/"
cgi = {{ dir = "{{dir}}/cgi", timeout = "5s" }}
sandbox = {widen}

[[route]]
prefix = "/"
static = {{ root = "{{dir}}/www" }}
"#,
        server = as_nobody()
    );
    let d = Daemon::with_config(&config)
        .dirs(&["cgi", "www", "outside", "tmp"])
        .env("LBAWS_SANDBOX_PROBE", probes)
        .start();
    // Writable by the scripts' user, if their sandbox allows.
    std::fs::set_permissions(d.path("tmp"), std::fs::Permissions::from_mode(0o777)).unwrap();
    script(&d.path("cgi"), "victim.sh", VICTIM);
    script(&d.path("cgi"), "attack.py", ATTACKER);
    std::fs::write(d.path("outside/secret.txt"), "secret\n").unwrap();
    std::fs::set_permissions(
        d.path("outside/secret.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(d.path("www/index.html"), "home\n").unwrap();
    d
}

/// A request held open by victim.sh: the connection, the script's pid and
/// its worker's.
fn victim(d: &Daemon) -> (std::net::TcpStream, i32, i32) {
    let mut s = connect(d.addr());
    s.write_all(b"GET /cgi-bin/victim.sh HTTP/1.1\r\nHost: t\r\nCookie: session=s3cr3t\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    let pid = loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "victim.sh ended early");
        if let Some(pid) = line.trim().strip_prefix("pid ") {
            break pid.parse::<i32>().unwrap();
        }
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let worker = after.split(' ').nth(1).unwrap().parse().unwrap();
    (s, pid, worker)
}

/// The attacker's report, by attack.
fn attack(d: &Daemon, prefix: &str, victim: (i32, i32), port: u16) -> Vec<(String, String)> {
    let q = format!(
        "victim={}&worker={}&supervisor={}&port={port}&outside={}&tmp={}",
        victim.0,
        victim.1,
        d.pid,
        d.path("outside/secret.txt").display(),
        d.path("tmp").display()
    );
    let r = get(d.addr(), &format!("{prefix}attack.py?{q}"));
    assert_eq!(r.status, 200, "{}\n{}", r.body_str(), d.logs());
    r.body_str()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn verdicts(report: &[(String, String)]) -> Vec<(&str, bool)> {
    report
        .iter()
        .map(|(k, v)| (k.as_str(), v == "allowed"))
        .collect()
}

/// attack.py's attacks, in its order.
const ATTACKS: [&str; 7] = [
    "environ",
    "ptrace",
    "kill-supervisor",
    "kill-worker",
    "read-outside",
    "write-tmp",
    "connect",
];

/// The verdicts expected when only `allowed` work.
fn only(allowed: &[&str]) -> Vec<(&'static str, bool)> {
    ATTACKS.iter().map(|a| (*a, allowed.contains(a))).collect()
}

#[test]
fn scripts_reach_neither_other_connections_nor_the_supervisor_nor_beyond_their_route() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let widen = format!(
        "{{ read = [\"{{dir}}/outside\"], write = [\"{{dir}}/tmp\"], connect_ports = [{port}] }}"
    );
    let d = daemon("best-effort", &widen, "");
    let (_held, pid, worker) = victim(&d);

    let report = attack(&d, "/cgi-bin/", (pid, worker), port);
    assert_eq!(verdicts(&report), only(&[]), "{report:?}");
    assert!(!d.path("tmp/written-by-a-script").exists());

    // Widened: what the route lists, and still nothing of other processes.
    let report = attack(&d, "/wide/", (pid, worker), port);
    let widened = ["read-outside", "write-tmp", "connect"];
    assert_eq!(verdicts(&report), only(&widened), "{report:?}");
    assert!(d.path("tmp/written-by-a-script").exists());
    // The victim was never stopped or disturbed: still running.
    assert!(Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn without_the_sandbox_every_attack_works() {
    // The control: the attacks are real ones, which only the sandbox stops;
    // but for one layer that is not the sandbox's. Where CGI limits are
    // rlimits, each script runs in a user namespace of its own (its process
    // limit counts there), and a process of another user namespace is out
    // of ptrace's reach (so /proc/PID/environ too), sandbox or not.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = daemon("off", "{}", "");
    let (_held, pid, worker) = victim(&d);
    let report = attack(&d, "/cgi-bin/", (pid, worker), port);
    let own_userns = d
        .logs()
        .contains("processes counted per script in a user namespace of its own");
    let expected: Vec<&str> = match own_userns {
        true => ATTACKS[2..].to_vec(),
        false => ATTACKS.to_vec(),
    };
    assert_eq!(verdicts(&report), only(&expected), "{report:?}");
    if own_userns {
        assert_eq!(
            report[..2],
            [
                ("environ".to_string(), "denied EACCES".to_string()),
                ("ptrace".to_string(), "denied EPERM".to_string())
            ]
        );
    }
}

fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

#[test]
fn workers_run_under_a_seccomp_filter_with_no_new_privileges() {
    for (mode, seccomp) in [("best-effort", "2"), ("off", "0")] {
        let d = daemon(mode, "{}", "");
        let (_held, pid, worker) = victim(&d);
        assert_eq!(
            (
                status_field(worker, "Seccomp:"),
                status_field(pid, "Seccomp:")
            ),
            (seccomp.to_string(), seccomp.to_string()),
            "mode {mode}"
        );
        if mode != "off" {
            assert_eq!(status_field(worker, "NoNewPrivs:"), "1");
        }
    }
}

/// A static-only daemon whose workers run `probes` after entering their
/// sandbox (test builds only); `extra` goes into `[sandbox]`.
fn static_daemon(probes: &str, extra: &str) -> Daemon {
    let d = Daemon::with_config(&format!(
        "{}\n[sandbox]\n{extra}\n[[listen]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\nprefix = \"/\"\nstatic = {{ root = \"{{dir}}/www\" }}\n",
        as_nobody()
    ))
    .dirs(&["www", "outside"])
    .env("LBAWS_SANDBOX_PROBE", probes)
    .start();
    std::fs::write(d.path("www/index.html"), "home\n").unwrap();
    std::fs::write(d.path("outside/secret.txt"), "secret\n").unwrap();
    d
}

#[test]
fn a_static_worker_reads_its_roots_only_and_cannot_write_run_fork_connect_or_signal() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut d = static_daemon(
        &format!(
            "open:{{dir}}/outside/secret.txt open:{{dir}}/www/index.html write:{{dir}}/www \
             exec:/bin/true fork connect:{port} kill:parent"
        ),
        "",
    );
    // Each refusal is an error for the probe only: the request is answered.
    assert_eq!(get(d.addr(), "/").body_str(), "home\n");
    let dir = d.dir.path().display().to_string();
    for (probe, outcome) in [
        (
            format!("open:{dir}/outside/secret.txt"),
            "refused (Permission denied",
        ),
        (format!("open:{dir}/www/index.html"), "allowed"),
        (format!("write:{dir}/www"), "refused (Permission denied"),
        ("exec:/bin/true".into(), "refused (Permission denied"),
        ("fork".into(), "refused (Resource temporarily unavailable"),
        (format!("connect:{port}"), "refused (Permission denied"),
        ("kill:parent".into(), "refused (Operation not permitted"),
    ] {
        d.wait_log(&format!("sandbox probe {probe}: {outcome}"));
    }
    assert!(!d.path("www/lbaws-probe").exists());
}

#[test]
fn with_strict_syscalls_a_refused_call_ends_the_worker_and_is_logged_by_name() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for (probe, call) in [
        ("exec:/bin/true".to_string(), "execve"),
        (format!("connect:{port}"), "socket"),
        ("kill:parent".to_string(), "kill"),
        ("fork".to_string(), "clone"),
    ] {
        let mut d = static_daemon(&probe, "strict_syscalls = true");
        // The worker dies before it answers.
        let mut s = connect(d.addr());
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        assert!(buf.is_empty(), "{probe}: {}", String::from_utf8_lossy(&buf));
        d.wait_log(&format!("killed by its sandbox: system call {call} ("));
        assert_eq!(d.count_log("sandbox probe"), 0, "{probe}: {}", d.logs());
        // The supervisor goes on: the next worker is forked as usual.
        assert!(d.alive());
    }
}

#[test]
fn a_cgi_worker_cannot_connect_to_unlisted_ports_nor_signal_its_supervisor() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let mut d = daemon(
        "best-effort",
        &format!("{{ connect_ports = [{port}] }}"),
        &format!("connect:{other_port} connect:{port} kill:parent"),
    );
    assert_eq!(get(d.addr(), "/").body_str(), "home\n");
    d.wait_log(&format!(
        "sandbox probe connect:{other_port}: refused (Permission denied"
    ));
    // A route lists it: its scripts may, so their worker may.
    d.wait_log(&format!("sandbox probe connect:{port}: allowed"));
    d.wait_log("sandbox probe kill:parent: refused (Operation not permitted");
}

#[test]
fn check_prints_each_routes_sandbox_and_required_mode_holds_here() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[sandbox]\nmode = \"required\"\n[[route]]\nprefix = \"/app\"\ncgi = { script = \"/usr/lib/cgi-bin/app\" }\nsandbox = { connect_ports = [5432] }\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("sandbox: scripts of /app: /usr/lib/cgi-bin/app (read+exec)"),
        "{text}"
    );
    assert!(text.contains("TCP connect to port 5432"), "{text}");
    assert!(text.contains("sandbox required: Landlock ABI"), "{text}");
    assert!(text.contains("seccomp deny-list"), "{text}");
}
