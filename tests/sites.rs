//! Name-based virtual hosts and the response controls: sites picked by the
//! absolute-form target or the Host field (exact names, a wildcard, the
//! default), `headers` on a site and a route (on errors and 304s too), error
//! pages with their own status, redirects that keep the request, access
//! lines in JSON read back by a JSON parser, includes with errors at the
//! included file's position, a site added by editing a file in sites.d and
//! reloading, and `lbaws check --explain`. Real binary, real curl.

mod util;

use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use util::*;

const SITES: &str = r#"
[[listen]]
address = "127.0.0.1:0"

[log]
access = "{dir}/access.log"
access_format = "json"

[[site]]
names = ["a.test", "www.a.test"]
headers = { "Strict-Transport-Security" = "max-age=63072000", "Server" = "a-server" }
errors = { 404 = "/errors/404.html", 403 = "/errors/403.html", 502 = "/errors/50x.html" }
access = "{dir}/a.log"

[[site.route]]
prefix = "/"
static = { root = "{dir}/a" }

[[site.route]]
prefix = "/api"
respond = { status = 200, body = "api\n" }
headers = { "Cache-Control" = "no-store", "Strict-Transport-Security" = "max-age=1" }

[[site.route]]
prefix = "/broken"
cgi = { script = "{dir}/cgi/broken.sh" }

[[site.route]]
prefix = "/metrics"
status = { format = "prometheus" }

[[site]]
names = ["*.b.test", "[::1]"]
[[site.route]]
prefix = "/"
respond = { status = 200, body = "b\n" }
[[site.route]]
prefix = "/old"
redirect = { to = "https://{host}{uri}", status = 308 }

[[site]]
names = ["c.test"]
default = true
[[site.route]]
prefix = "/"
respond = { status = 200, body = "c\n" }
"#;

fn daemon() -> Daemon {
    let d = Daemon::with_config(SITES)
        .dirs(&["a/errors", "cgi"])
        .start();
    std::fs::write(d.path("a/index.html"), "A\n").unwrap();
    std::fs::write(d.path("a/.hidden"), "secret\n").unwrap();
    std::fs::write(d.path("a/errors/404.html"), "<p>not here</p>\n").unwrap();
    std::fs::write(d.path("a/errors/403.html"), "<p>not yours</p>\n").unwrap();
    let s = d.path("cgi/broken.sh");
    std::fs::write(&s, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// `curl -si` for `host` (resolved to the daemon with `--resolve`) and path.
fn at(d: &Daemon, host: &str, path: &str, extra: &[&str]) -> Response {
    let port = d.addr().port();
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("http://{host}:{port}{path}");
    let mut args = vec!["-i", "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    parse_response(curl(&args).as_bytes())
}

/// The same with `-H Host:` over 127.0.0.1.
fn with_host(d: &Daemon, host: &str, path: &str, extra: &[&str]) -> Response {
    let h = format!("Host: {host}");
    let url = format!("http://{}{path}", d.addr());
    let mut args = vec!["-i", "-H", &h];
    args.extend_from_slice(extra);
    args.push(&url);
    parse_response(curl(&args).as_bytes())
}

#[test]
fn sites_by_name_wildcard_default_and_absolute_form() {
    let d = daemon();
    let r = at(&d, "a.test", "/", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (200, "A\n"));
    assert_eq!(at(&d, "WWW.A.test", "/api", &[]).body_str(), "api\n");
    assert_eq!(at(&d, "x.b.test", "/", &[]).body_str(), "b\n");
    assert_eq!(with_host(&d, "y.b.test.:80", "/", &[]).body_str(), "b\n");
    // A wildcard is one label: neither the bare name nor two labels.
    assert_eq!(with_host(&d, "b.test", "/", &[]).body_str(), "c\n");
    assert_eq!(with_host(&d, "x.y.b.test", "/", &[]).body_str(), "c\n");
    assert_eq!(with_host(&d, "nowhere.test", "/", &[]).body_str(), "c\n");
    // HTTP/1.0 without a Host: the default site.
    let r = exchange(d.addr(), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.body_str(), "c\n");
    // The absolute-form target's host wins over the Host field (RFC 9112 3.2.2).
    let r = exchange(
        d.addr(),
        b"GET http://x.b.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.body_str(), "b\n");
    // An IPv6 literal name.
    assert_eq!(with_host(&d, "[::1]:8080", "/", &[]).body_str(), "b\n");
    // The site label on the metrics.
    let m = at(&d, "a.test", "/metrics", &[]).body_str();
    for want in [
        "lbaws_http_responses_total{site=\"a.test\",code=\"2xx\"} ",
        "lbaws_http_responses_total{site=\"*.b.test\",code=\"2xx\"} ",
        "lbaws_http_responses_total{site=\"c.test\",code=\"2xx\"} ",
        "lbaws_http_responses_total{site=\"other\",code=\"4xx\"} ",
        "lbaws_request_duration_seconds_count{site=\"c.test\"} ",
    ] {
        assert!(m.contains(want), "no {want} in\n{m}");
    }
    let n = |label: &str| -> u64 {
        let key = format!("lbaws_http_responses_total{{site=\"{label}\",code=\"2xx\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!((n("a.test"), n("*.b.test"), n("c.test")), (2, 4, 4), "{m}");
}

#[test]
fn headers_on_site_route_errors_and_304() {
    let d = daemon();
    let r = at(&d, "a.test", "/", &[]);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=63072000")
    );
    assert_eq!(r.header("server").as_deref(), Some("a-server"), "replaced");
    assert_eq!(r.head.matches("Server:").count(), 1, "{}", r.head);
    // The route's field wins over the site's; the site's others stay.
    let r = at(&d, "a.test", "/api", &[]);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=1")
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("server").as_deref(), Some("a-server"));
    // A 304 carries them.
    let etag = at(&d, "a.test", "/", &[]).header("etag").unwrap();
    let inm = format!("If-None-Match: {etag}");
    let r = at(&d, "a.test", "/", &["-H", &inm]);
    assert_eq!(r.status, 304);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=63072000")
    );
    // And an error: 404, 405.
    let r = at(&d, "a.test", "/nothing", &[]);
    assert_eq!(r.status, 404);
    assert!(
        r.header("strict-transport-security").is_some(),
        "{}",
        r.head
    );
    let r = at(&d, "a.test", "/", &["-X", "DELETE"]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    assert!(
        r.header("strict-transport-security").is_some(),
        "{}",
        r.head
    );
    // Other sites do not get them.
    let r = at(&d, "x.b.test", "/", &[]);
    assert!(r.header("strict-transport-security").is_none());
    assert_eq!(r.header("server").as_deref(), Some("lbaws"));
}

#[test]
fn error_pages_keep_their_status() {
    let d = daemon();
    let r = at(&d, "a.test", "/nothing", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.body_str(), "<p>not here</p>\n");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let r = at(&d, "a.test", "/.hidden", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.body_str(), "<p>not yours</p>\n");
    // HEAD: the page's length, no body.
    let r = exchange(
        d.addr(),
        b"HEAD /nothing HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-length").as_deref(), Some("16"));
    assert!(r.body.is_empty());
    // A 5xx whose page is missing: the built-in body, the same status.
    let r = at(&d, "a.test", "/broken", &[]);
    assert_eq!(r.status, 502);
    assert_eq!(r.body_str(), "502 Bad Gateway\n");
    std::fs::write(d.path("a/errors/50x.html"), "<p>down</p>\n").unwrap();
    let r = at(&d, "a.test", "/broken", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (502, "<p>down</p>\n"));
    // The page itself is still served as itself, with 200.
    let r = at(&d, "a.test", "/errors/404.html", &[]);
    assert_eq!(r.status, 200);
    // A site without pages: the built-in body.
    let r = at(&d, "x.b.test", "/old", &["-X", "TRACE"]);
    assert!(r.status >= 300, "{}", r.head);
}

#[test]
fn redirects_keep_the_request() {
    let d = daemon();
    let r = at(&d, "x.b.test", "/old/path?q=1&r=%41", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://x.b.test/old/path?q=1&r=%41")
    );
    let r = with_host(&d, "[::1]:8443", "/old/a%20b?x", &[]);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://[::1]/old/a%20b?x")
    );
    // Whatever the target carries, the field stays one field.
    let r = exchange(
        d.addr(),
        b"GET /old/\"<x>\"?a=\xff HTTP/1.1\r\nHost: x.b.test\r\nConnection: close\r\n\r\n",
    );
    if r.status == 308 {
        let loc = r.header("location").unwrap();
        assert!(loc.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{loc:?}");
        assert_eq!(loc, "https://x.b.test/old/%22%3Cx%3E%22?a=%FF");
    } else {
        assert_eq!(r.status, 400, "refused by the parser, or redirected safely");
    }
}

/// Each line of `path`, as Python's json.loads reads it (re-serialised with
/// sorted keys), so a line that is not JSON fails the test.
fn json_lines(path: &std::path::Path) -> Vec<serde_like::Obj> {
    const READ: &str = r#"
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    o = json.loads(line)
    print("\t".join("%s=%s" % (k, json.dumps(o[k], ensure_ascii=True)) for k in sorted(o)))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", READ])
        .arg(path)
        .stderr(Stdio::piped())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "json.loads refused a line: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&std::fs::read(path).unwrap())
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(serde_like::Obj::parse)
        .collect()
}

/// A line as key=json-value pairs (what the Python above printed).
mod serde_like {
    pub struct Obj(pub Vec<(String, String)>);
    impl Obj {
        pub fn parse(line: &str) -> Obj {
            Obj(line
                .split('\t')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect())
        }
        pub fn get(&self, k: &str) -> &str {
            &self.0.iter().find(|(n, _)| n == k).unwrap().1
        }
    }
}

#[test]
fn json_access_lines_parse_and_sites_log_on_their_own() {
    let d = daemon();
    // A control byte (tab) in the user agent.
    with_host(&d, "x.b.test", "/", &["-A", "tab\there"]);
    // Raw bytes: quotes and a backslash in the target (control bytes can
    // only come percent-encoded: the parser refuses them raw), a user agent
    // with bytes that are not UTF-8.
    let r = exchange(
        d.addr(),
        b"GET /x/%01?x=\"y\"\\ HTTP/1.1\r\nHost: c.test\r\nUser-Agent: a\x80b \"q\" \\ \xe9t\xe9\r\nReferer: http://r.test/\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    // A request refused before it was routed: no site, no request fields.
    let r = exchange(d.addr(), b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    assert_eq!(r.status, 400);
    // Site a logs to its own file.
    at(&d, "a.test", "/", &[]);
    let main = d.path("access.log");
    assert!(wait_for(DEADLINE, || {
        std::fs::read_to_string(&main).is_ok_and(|s| s.lines().count() >= 3)
            && std::fs::read_to_string(d.path("a.log")).is_ok_and(|s| s.lines().count() >= 1)
    }));
    let lines = json_lines(&main);
    assert_eq!(lines.len(), 3, "site a.test's line went to its own file");
    let b = &lines[0];
    assert_eq!(b.get("site"), "\"*.b.test\"");
    assert_eq!(b.get("host"), "\"x.b.test\"");
    assert_eq!(b.get("method"), "\"GET\"");
    assert_eq!(b.get("target"), "\"/\"");
    assert_eq!(b.get("protocol"), "\"HTTP/1.1\"");
    assert_eq!(b.get("status"), "200");
    assert_eq!(b.get("bytes"), "2");
    assert_eq!(b.get("client"), "\"127.0.0.1\"");
    assert_eq!(b.get("user_agent"), "\"tab\\there\"");
    assert_eq!(b.get("cut"), "false");
    assert!(b.get("time").ends_with("Z\"") && b.get("time").contains('T'));
    assert!(b.get("duration_us").parse::<u64>().is_ok());
    let c = &lines[1];
    assert_eq!(c.get("site"), "\"c.test\"");
    assert_eq!(c.get("target"), "\"/x/%01?x=\\\"y\\\"\\\\\"");
    assert_eq!(
        c.get("user_agent"),
        "\"a\\ufffdb \\\"q\\\" \\\\ \\ufffdt\\ufffd\""
    );
    assert_eq!(c.get("referer"), "\"http://r.test/\"");
    let refused = &lines[2];
    assert_eq!(refused.get("status"), "400");
    assert_eq!(refused.get("site"), "null");
    assert_eq!(refused.get("target"), "null");
    let a = json_lines(&d.path("a.log"));
    assert_eq!(a[0].get("site"), "\"a.test\"");
}

#[test]
fn vhost_combined_lines_begin_with_the_site() {
    let d = Daemon::with_config(
        &SITES
            .replace(
                "access_format = \"json\"",
                "access_format = \"vhost_combined\"",
            )
            .replace("access = \"{dir}/a.log\"\n", ""),
    )
    .dirs(&["a"])
    .start();
    with_host(&d, "x.b.test", "/", &[]);
    with_host(&d, "nowhere", "/", &[]);
    let log = d.path("access.log");
    assert!(wait_for(DEADLINE, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.lines().count() >= 2)
    }));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("*.b.test 127.0.0.1 - - ["), "{text}");
    assert!(lines[1].starts_with("c.test 127.0.0.1 - - ["), "{text}");
}

fn check(args: &[&str], config: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn includes_locate_errors_in_the_included_file_and_reload_adds_a_site() {
    let main_text = "include = [\"sites.d/*.toml\"]\n[[listen]]\naddress = \"127.0.0.1:0\"\n";
    let mut d = Daemon::with_config(main_text)
        .dirs(&["sites.d"])
        .no_wait()
        .start();
    // (Started with no site: every request is a 404 of the default site.)
    d.wait_log("info: ready:");
    let cfg = d.path("config.toml");
    let site = d.path("sites.d/one.toml");
    std::fs::write(
        &site,
        "[[site]]\nnames = [\"one.test\"]\n[[site.route]]\nprefix = \"/\"\nrespond = { status = 200, body = \"one\\n\" }\n",
    )
    .unwrap();
    let (code, out, _) = check(&[], &cfg);
    assert_eq!(code, Some(0), "{out}");
    d.signal(Signal::SIGHUP);
    d.wait_log("reloaded configuration");
    assert_eq!(with_host(&d, "one.test", "/", &[]).body_str(), "one\n");
    // A broken included file: check and reload name it, line and column.
    std::fs::write(
        &site,
        "[[site]]\nnames = [\"one.test\"]\n[[site.route]]\nprefix = \"/\"\nrespond = { status = 2000 }\n",
    )
    .unwrap();
    let (code, _, err) = check(&[], &cfg);
    assert_eq!(code, Some(78));
    assert_eq!(
        err.trim(),
        format!("{}:5:22: status 2000 out of range 200-599", site.display())
    );
    d.signal(Signal::SIGHUP);
    d.wait_log(&format!("{}:5:22: status 2000", site.display()));
    assert_eq!(
        with_host(&d, "one.test", "/", &[]).body_str(),
        "one\n",
        "kept"
    );
}

#[test]
fn check_explains_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, SITES.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let (code, out, err) = check(&["--explain", "http://www.a.test:8080/api/x?y=1"], &cfg);
    assert_eq!(code, Some(0), "{err}");
    let c = cfg.display();
    assert_eq!(
        out,
        format!(
            "http://www.a.test:8080/api/x?y=1\n  site:   a.test (its name), at {c}:9:1; names a.test, www.a.test\n  route:  prefix \"/api\" at {c}:19:1\n  action: respond 200\n  header: Cache-Control: no-store\n  header: Strict-Transport-Security: max-age=1\n  header: Server: a-server\n  error page: 403 -> /errors/403.html\n  error page: 404 -> /errors/404.html\n  error page: 502 -> /errors/50x.html\n  access log: {}/a.log\n",
            dir.path().display()
        )
    );
    let (_, out, _) = check(&["--explain", "http://q.b.test/old/p?x=1"], &cfg);
    assert!(out.contains("site:   *.b.test (a wildcard name)"), "{out}");
    assert!(
        out.contains("action: redirect 308 to https://q.b.test/old/p?x=1 (https://{host}{uri})"),
        "{out}"
    );
    let (_, out, _) = check(&["--explain", "http://elsewhere/"], &cfg);
    assert!(
        out.contains("site:   c.test (no site has this name: the default site)"),
        "{out}"
    );
    let (code, _, err) = check(&["--explain", "ftp://x/"], &cfg);
    assert_eq!(code, Some(64));
    assert!(err.contains("not an http:// URL"), "{err}");
}
