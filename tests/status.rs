//! The status page: the Prometheus output read by the reference parser
//! (python3-prometheus-client) with exact request counts, and checked by
//! `promtool check metrics`; the gate's connections, the bytes received
//! and the supervisor's and the gate's processes as they are; lost
//! access-log lines; the text and JSON pages showing a worker in its state
//! while its request is in flight, a route's `allow`, and `lbaws status`.

mod util;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use util::*;

/// Waits (the script's own work, not the test's) until the file named by
/// $GO exists, then answers.
const WAIT_SH: &str = "#!/bin/sh\nwhile [ ! -e \"$GO\" ]; do sleep 0.05; done\nprintf 'Content-Type: text/plain\\n\\nwaited\\n'\n";
/// Answers with the request body.
const CAT_SH: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nexec cat\n";

fn daemon() -> Daemon {
    daemon_on("127.0.0.1:0")
}

fn daemon_on(listen: &str) -> Daemon {
    let d = Daemon::with_config(
        &r#"
[[listen]]
address = "LISTEN"

[[route]]
prefix = "/metrics"
status = { format = "prometheus" }

[[route]]
prefix = "/server-status"
status = { format = "text" }
allow = ["127.0.0.1/32", "::1/128"]

[[route]]
prefix = "/status.json"
status = { format = "json" }
allow = ["127.0.0.1"]

[[route]]
prefix = "/cgi-bin/"
cgi = { dir = "{dir}/cgi", timeout = "20s", env = { GO = "{dir}/cgi/go" } }

# A worker reads this route's bodies itself (not the gate): the page can
# show one doing it.
[[route]]
prefix = "/unbuffered-cgi/"
cgi = { dir = "{dir}/cgi", buffer_body = false, env = { GO = "{dir}/cgi/go" } }

[[route]]
prefix = "/private-cgi/"
cgi = { dir = "{dir}/cgi", env = { GO = "{dir}/cgi/go" } }
allow = ["127.0.0.1/32"]

[[route]]
prefix = "/missing"
respond = { status = 404, body = "none\n" }

[[route]]
prefix = "/"
respond = { status = 200, body = "hello\n" }
"#
        .replace("LISTEN", listen),
    )
    .dirs(&["cgi"])
    .start();
    for (name, text) in [("wait.sh", WAIT_SH), ("cat.sh", CAT_SH)] {
        let p = d.path(&format!("cgi/{name}"));
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    d
}

/// The samples of a Prometheus exposition, as the reference parser reads
/// them: `name{label="value",...}` -> value. Panics if it does not parse.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        print("%s{%s} %r" % (s.name, labels, s.value))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (and python3-prometheus-client, scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference parser refused the output: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse::<f64>().unwrap())
        })
        .collect()
}

fn scrape(d: &Daemon) -> BTreeMap<String, f64> {
    let r = get(d.addr(), "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_prometheus(&r.body_str())
}

/// Responses of class `code` (e.g. "4xx"), all sites together.
fn class(m: &BTreeMap<String, f64>, code: &str) -> f64 {
    let key = format!("lbaws_http_responses_total{{code=\"{code}\",site=");
    m.iter()
        .filter(|(k, _)| k.starts_with(&key))
        .map(|(_, v)| v)
        .sum()
}

fn requests(m: &BTreeMap<String, f64>) -> f64 {
    ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .map(|c| class(m, c))
        .sum()
}

/// A histogram's series, all sites together (`le` given, or `_count`).
fn histogram(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            k.starts_with(&format!("lbaws_request_duration_seconds_{series}"))
                && (series == "count" || k.contains("le=\"+Inf\""))
        })
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn prometheus_output_parses_and_counts_every_request_exactly() {
    let d = daemon();
    let before = scrape(&d);
    for key in [
        "lbaws_build_info{version=\"".to_string() + env!("CARGO_PKG_VERSION"),
        "lbaws_workers{state=\"cgi\"}".into(),
        "lbaws_connections_accepted_total{}".into(),
        "lbaws_connections_refused_total{reason=\"no_worker\"}".into(),
        "lbaws_worker_exits_total{cause=\"ok\"}".into(),
        "lbaws_reloads_total{result=\"ok\"}".into(),
        "lbaws_upgrades_total{}".into(),
        "lbaws_request_duration_seconds_bucket{le=\"+Inf\",site=\"default\"}".into(),
        "lbaws_request_duration_seconds_count{site=\"default\"}".into(),
        "lbaws_connections_active{}".into(),
        "lbaws_gate_connections{}".into(),
        "lbaws_gate_connections_max{}".into(),
        "lbaws_gate_connections_queued{}".into(),
        "lbaws_gate_connections_parked{}".into(),
        "lbaws_received_bytes_total{}".into(),
        "lbaws_access_log_lines_lost_total{}".into(),
        "process_cpu_seconds_total{process=\"supervisor\"}".into(),
        "process_cpu_seconds_total{process=\"gate\"}".into(),
        "lbaws_http_responses_total{code=\"2xx\",site=\"default\"}".into(),
    ] {
        assert!(
            before.keys().any(|k| k.starts_with(&key)),
            "no {key} in {before:?}"
        );
    }
    // N requests from curl (one connection, keep-alive) to a route that
    // answers 404: the 4xx counter grows by exactly N.
    const N: usize = 37;
    let url = format!("http://{}/missing", d.addr());
    let urls: Vec<&str> = (0..N).map(|_| url.as_str()).collect();
    let mut args = vec!["-o", "/dev/null"];
    args.extend(&urls);
    curl(&args);
    let four = "lbaws_http_responses_total{code=\"4xx\",site=\"default\"}";
    // A response is counted just after it is sent: poll until curl's last
    // is, then check that no more than N were.
    let mut scrapes = 0;
    let mut after = BTreeMap::new();
    assert!(wait_for(DEADLINE, || {
        after = scrape(&d);
        scrapes += 1;
        after[four] >= before[four] + N as f64
    }));
    assert_eq!(after[four] - before[four], N as f64, "{after:?}");
    // Every other response in between was a scrape: the first counted
    // itself once sent, the last one not yet.
    assert_eq!(
        requests(&after) - requests(&before),
        (N + scrapes) as f64,
        "{after:?}"
    );
    // The histogram counts every response, and its buckets add up.
    assert_eq!(histogram(&after, "count"), requests(&after));
    assert_eq!(histogram(&after, "bucket"), requests(&after));
    assert!(after["lbaws_response_body_bytes_total{}"] >= (N * "none\n".len()) as f64);
    assert!(
        after["lbaws_connections_accepted_total{}"]
            >= before["lbaws_connections_accepted_total{}"] + 1.0 + scrapes as f64
    );
}

#[test]
fn promtool_finds_nothing_to_say() {
    if !have("promtool") {
        skip_or_fail("promtool missing (Debian package prometheus; scripts/test installs it)");
        return;
    }
    let d = daemon();
    // Every family with samples in it: a request of each kind first.
    assert_eq!(get(d.addr(), "/missing").status, 404);
    let page = get(d.addr(), "/metrics").body_str();
    assert!(
        page.contains("process_open_fds{process=\"gate\"}"),
        "{page}"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scrape with a request of known bytes (`SCRAPE`), on a connection of
/// its own.
const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

fn scrape_exact(d: &Daemon) -> BTreeMap<String, f64> {
    let mut c = Client::new(d.addr());
    c.send(SCRAPE);
    let r = c.read(false);
    assert_eq!(r.status, 200);
    parse_prometheus(&r.body_str())
}

#[test]
fn bytes_received_count_every_request_byte_the_workers_and_the_gate_read() {
    let d = daemon();
    let before = scrape_exact(&d);
    let mut scrapes = 0;
    // A GET, read by its worker.
    let get = b"GET /missing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut c = Client::new(d.addr());
    c.send(get);
    assert_eq!(c.read(false).status, 404);
    // A POST whose body comes late: its worker reads the head (and what came
    // with it), the gate receives the rest.
    let head = b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 10\r\n\r\nabc";
    let mut post = Client::new(d.addr());
    post.send(head);
    let in_gate = wait_for(DEADLINE, || {
        scrapes += 1;
        scrape_exact(&d)["lbaws_gate_connections{}"] == 1.0
    });
    assert!(in_gate, "the body never waited in the gate");
    post.send(b"defghij");
    let r = read_response(&mut post.reader);
    assert_eq!((r.status, r.body_str().as_str()), (200, "abcdefghij"));
    let after = scrape_exact(&d);
    scrapes += 1;
    let key = "lbaws_received_bytes_total{}";
    assert_eq!(
        after[key] - before[key],
        (get.len() + head.len() + "defghij".len() + scrapes * SCRAPE.len()) as f64
    );
}

/// The `processes` of the JSON page: role -> (pid, open_fds).
fn json_processes(d: &Daemon) -> BTreeMap<String, (i64, i64)> {
    let json = get(d.addr(), "/status.json").body_str();
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json,sys\nfor p in json.load(sys.stdin)['processes']: print(p['process'], p['pid'], p['open_fds'])",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(json.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                (f[1].parse().unwrap(), f[2].parse().unwrap()),
            )
        })
        .collect()
}

/// The soft `Max open files` of a process, as the test reads it.
fn max_open_files(pid: i32) -> f64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn the_gate_and_the_processes_are_shown_as_they_are() {
    let d = daemon();
    let gate = d.wait_gate();
    let procs = json_processes(&d);
    assert_eq!(procs["supervisor"].0, d.pid as i64, "{procs:?}");
    assert_eq!(procs["gate"].0, gate as i64, "{procs:?}");
    let m = scrape(&d);
    for (who, pid) in [("supervisor", d.pid), ("gate", gate)] {
        let get = |name: &str| m[&format!("{name}{{process=\"{who}\"}}")];
        assert_eq!(get("process_max_fds"), max_open_files(pid), "{who}");
        assert!(get("process_resident_memory_bytes") > 0.0, "{who}");
        assert!(get("process_cpu_seconds_total") >= 0.0, "{who}");
    }
    assert!(
        m["process_start_time_seconds{process=\"supervisor\"}"]
            <= m["process_start_time_seconds{process=\"gate\"}"],
        "the gate starts after the supervisor: {m:?}"
    );
    assert!(m["lbaws_gate_connections_max{}"] > 0.0);
    // Connections with half a head wait in the gate, a descriptor each.
    const K: usize = 5;
    let gate_fds = m["process_open_fds{process=\"gate\"}"];
    assert_eq!(m["lbaws_gate_connections{}"], 0.0);
    let idle: Vec<_> = (0..K)
        .map(|_| {
            let mut c = connect(d.addr());
            c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    let mut m = BTreeMap::new();
    let held = wait_for(DEADLINE, || {
        m = scrape(&d);
        m["lbaws_gate_connections{}"] == K as f64
            && m["process_open_fds{process=\"gate\"}"] == gate_fds + K as f64
    });
    assert!(held, "{m:?}");
    let workers: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("lbaws_workers{"))
        .map(|(_, v)| v)
        .sum();
    assert!(workers >= 1.0, "the scrape's own worker: {m:?}");
    assert_eq!(m["lbaws_connections_active{}"], K as f64 + workers);
    assert_eq!(m["lbaws_gate_connections_queued{}"], 0.0);
    assert_eq!(m["lbaws_gate_connections_parked{}"], 0.0);
    drop(idle);
    // A gate that died and was started again: the new one is shown (and
    // never the old pid's process).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gate),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut procs = BTreeMap::new();
    let again = wait_for(DEADLINE, || {
        procs = json_processes(&d);
        procs.get("gate").is_some_and(|g| g.0 != gate as i64)
    });
    assert!(again, "{procs:?}\n{}", d.logs());
    assert_eq!(Some(procs["gate"].0 as i32), d.gate(), "{procs:?}");
}

#[test]
fn lost_access_log_lines_are_counted() {
    let d = Daemon::with_config(
        "[log]\naccess = \"/dev/full\"\n\n[[listen]]\naddress = \"127.0.0.1:0\"\n\n\
         [[route]]\nprefix = \"/metrics\"\nstatus = { format = \"prometheus\" }\n\n\
         [[route]]\nprefix = \"/\"\nrespond = { status = 200, body = \"hello\\n\" }\n",
    )
    .start();
    const N: usize = 7;
    for _ in 0..N {
        assert_eq!(get(d.addr(), "/").status, 200);
    }
    // Every response's line is lost, the scrapes' too: once the last
    // line's worker has counted its response, the two agree.
    let mut m = BTreeMap::new();
    let counted = wait_for(DEADLINE, || {
        m = scrape(&d);
        let lost = m["lbaws_access_log_lines_lost_total{}"];
        lost >= N as f64 && lost == requests(&m)
    });
    assert!(counted, "{m:?}");
    // Where the log is written, none.
    let ok = daemon();
    assert_eq!(get(ok.addr(), "/").status, 200);
    assert_eq!(scrape(&ok)["lbaws_access_log_lines_lost_total{}"], 0.0);
}

/// The text page while `conn` has a request in flight: polls until a worker
/// line shows `state` and `request`.
fn wait_for_worker(d: &Daemon, state: &str, request: &str) -> String {
    let mut page = String::new();
    let found = wait_for(DEADLINE, || {
        page = get(d.addr(), "/server-status").body_str();
        page.lines()
            .any(|l| l.split_whitespace().nth(2) == Some(state) && l.ends_with(request))
    });
    assert!(found, "no worker in {state} for {request:?}:\n{page}");
    page
}

#[test]
fn text_and_json_pages_show_a_worker_in_its_state_during_a_slow_request() {
    let d = daemon();
    // A CGI script that waits for a file the test creates.
    let mut slow = Client::from(source(3), d.addr());
    slow.send(b"GET /cgi-bin/wait.sh?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let page = wait_for_worker(&d, "cgi", "GET /cgi-bin/wait.sh?x=1 HTTP/1.1");
    assert!(page.starts_with(&format!("lbaws {} status\n", env!("CARGO_PKG_VERSION"))));
    let line = page.lines().find(|l| l.contains("wait.sh")).unwrap();
    assert!(line.contains(&format!("{}:", source(3))), "{line}");
    assert!(page.contains("1 cgi"), "{page}");
    // The same, as JSON a script can read.
    let json = get(d.addr(), "/status.json").body_str();
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json,sys; d=json.load(sys.stdin); \
             print([w['state'] for w in d['workers'] if 'wait.sh' in w['request']][0], d['workers_by_state']['cgi'])",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(json.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cgi 1\n", "{json}");
    std::fs::write(d.path("cgi/go"), "").unwrap();
    let r = read_response(&mut slow.reader);
    assert_eq!((r.status, r.body_str().as_str()), (200, "waited\n"));

    // A request body sent slowly to a route whose worker reads it (by
    // default the gate would): the worker is reading it.
    let mut body = Client::from(source(4), d.addr());
    body.send(b"POST /unbuffered-cgi/wait.sh HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 10\r\n\r\nabc");
    wait_for_worker(&d, "body", "POST /unbuffered-cgi/wait.sh HTTP/1.1");
    body.send(b"defghij");
    assert_eq!(read_response(&mut body.reader).status, 200);
    // Once their connections are closed, the workers are gone from the page.
    let gone = wait_for(DEADLINE, || {
        !get(d.addr(), "/server-status")
            .body_str()
            .contains("wait.sh")
    });
    assert!(gone);
}

#[test]
fn allow_refuses_other_sources_with_403() {
    let d = daemon();
    let ok = Client::from("127.0.0.1".parse().unwrap(), d.addr()).get("/server-status");
    assert_eq!(ok.status, 200);
    for path in ["/server-status", "/status.json"] {
        let mut c = Client::from(source(7), d.addr());
        let r = c.get(path);
        assert_eq!(r.status, 403, "{path} from {}", source(7));
        assert!(!r.body_str().contains("lbaws"), "{}", r.body_str());
    }
    // /status.json allows 127.0.0.1 alone.
    let r = Client::from("127.0.0.1".parse().unwrap(), d.addr()).get("/status.json");
    assert_eq!(r.status, 200);
    // No allow: everyone.
    let r = Client::from(source(7), d.addr()).get("/metrics");
    assert_eq!(r.status, 200);
    // On a CGI route, the script never runs and its body is not waited for:
    // the refusal comes at once though the body never does.
    let mut c = Client::from(source(8), d.addr());
    c.send(b"POST /private-cgi/wait.sh HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.status, 403);
    std::fs::write(d.path("cgi/go"), "").unwrap();
    let ok = get(d.addr(), "/private-cgi/wait.sh");
    assert_eq!((ok.status, ok.body_str().as_str()), (200, "waited\n"));
}

#[test]
fn lbaws_status_prints_the_text_page() {
    let d = daemon();
    // `lbaws status` asks the first [[listen]] address of the file it is
    // given: the one the daemon bound for its port 0.
    let cfg = d.path("status.toml");
    let text = std::fs::read_to_string(d.path("config.toml")).unwrap();
    std::fs::write(&cfg, text.replace("127.0.0.1:0", &d.addr().to_string())).unwrap();
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        page.starts_with("lbaws ") && page.contains("\nscoreboard: "),
        "{page}"
    );
    // `lbaws status | head -1`: a reader that goes away ends it quietly.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&cfg)
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0)
            || std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
    // Without a status route: a clear message, and a failure.
    let cfg = d.path("plain.toml");
    std::fs::write(&cfg, "[[listen]]\naddress = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no route with a status action"), "{err}");
}

/// `lbaws status` where the first listener takes the PROXY protocol: it
/// asks a plain listener if there is one, else it speaks the protocol
/// itself (a v2 LOCAL header, what a balancer's health check sends).
#[test]
fn lbaws_status_gets_through_a_proxy_protocol_listener() {
    let routes = "[[route]]\nprefix = \"/server-status\"\nstatus = { format = \"text\" }\nallow = [\"127.0.0.1/32\", \"unix\"]\n";
    let proxy = |name: &str| {
        format!("[[listen]]\naddress = \"unix:{{dir}}/{name}.sock\"\nproxy_protocol = true\n")
    };
    let plain = |name: &str| format!("[[listen]]\naddress = \"unix:{{dir}}/{name}.sock\"\n");
    for (what, config) in [
        (
            "a plain listener second",
            format!("{}{}{routes}", proxy("a"), plain("b")),
        ),
        ("PROXY listeners only", format!("{}{routes}", proxy("a"))),
    ] {
        let d = Daemon::with_config(&config).start();
        let out = Command::new(BIN)
            .args(["status", "--config"])
            .arg(d.path("config.toml"))
            .output()
            .unwrap();
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && page.contains("\nscoreboard: "),
            "{what}: {:?}: {}{page}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A balancer list without this host: refused, and said why. (A TCP
    // listener the test binds, handed over named as its entry is.)
    let l = loopback_listener();
    let addr = l.local_addr().unwrap();
    let mut d = Daemon::with_config(&format!(
        "[[listen]]\nname = \"web\"\naddress = \"{addr}\"\nproxy_protocol = true\nproxy_from = [\"10.0.0.0/8\"]\n{routes}"
    ))
    .listener(l)
    .wrapper(&["systemd-socket-activate", "--fdname=web"])
    .no_wait()
    .start();
    // The activator starts lbaws on the first connection (refused: it is
    // not from a balancer).
    assert!(wait_for(DEADLINE, || std::net::TcpStream::connect(addr).is_ok()));
    d.wait_log("info: ready:");
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(d.path("config.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy_from"), "{err}");
}
