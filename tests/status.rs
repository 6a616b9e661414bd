//! The status page: the Prometheus output read by the reference parser
//! (python3-prometheus-client) with exact request counts, the text and JSON
//! pages showing a worker in its state while its request is in flight, a
//! route's `allow`, and `lbaws status`.

mod util;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use util::*;

/// Waits (the script's own work, not the test's) until the file named by
/// $GO exists, then answers.
const WAIT_SH: &str = "#!/bin/sh\nwhile [ ! -e \"$GO\" ]; do sleep 0.05; done\nprintf 'Content-Type: text/plain\\n\\nwaited\\n'\n";

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
    let p = d.path("cgi/wait.sh");
    std::fs::write(&p, WAIT_SH).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
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
    let key = format!("lbaws_requests_total{{code=\"{code}\",site=");
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
        "lbaws_requests_total{code=\"2xx\",site=\"default\"}".into(),
        "lbaws_connections_parked{}".into(),
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
    let four = "lbaws_requests_total{code=\"4xx\",site=\"default\"}";
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

    // A request body sent slowly: the worker is reading it.
    let mut body = Client::from(source(4), d.addr());
    body.send(b"POST /cgi-bin/wait.sh HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 10\r\n\r\nabc");
    wait_for_worker(&d, "body", "POST /cgi-bin/wait.sh HTTP/1.1");
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
    let d = daemon_on(&format!("127.0.0.1:{}", free_port()));
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(d.path("config.toml"))
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
