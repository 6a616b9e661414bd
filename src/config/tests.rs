//! The configuration's unit tests: parsing, bounds and positions.
use super::raw::{parse_duration, parse_size};
use super::*;

fn err(text: &str) -> String {
    parse(text, "t.toml").unwrap_err().to_string()
}

#[test]
fn builtin_is_valid() {
    let c = parse(BUILTIN, BUILTIN_NAME).unwrap();
    assert_eq!(c.listen.len(), 1);
    assert_eq!(c.server.max_connections, 512);
    assert!(c.route("/anything").is_some());
}

#[test]
fn errors_carry_line_and_column() {
    assert_eq!(
        err("[server]\nmax_connection = 3\n"),
        "t.toml:2:1: unknown field `max_connection`, expected one of `user`, `group`, `max_connections`, `max_pending`, `max_pending_per_source`, `worker_reserve`, `max_connections_per_ip`, `shutdown_timeout`, `server_header`, `temp_dir`, `exit_idle_after`"
    );
    assert!(err("[server]\nshutdown_timeout = \"10 parsecs\"\n")
        .starts_with("t.toml:2:20: bad duration"));
    assert!(err("[server]\nmax_connections = 0\n").starts_with("t.toml:2:19: must be a positive"));
    assert!(err("[[listen]]\naddress = \"1.2.3:80\"\n").starts_with("t.toml:2:11: bad address"));
    assert!(err("[[listen]]\naddress = \"127.0.0.1:1\"\nname = \"a\"\n[[listen]]\naddress = \"127.0.0.1:2\"\nname = \"a\"\n")
        .starts_with("t.toml:6:8: duplicate listener name"));
}

#[test]
fn proxy_protocol() {
    let tcp = |extra: &str| format!("[[listen]]\naddress = \"127.0.0.1:1\"\n{extra}");
    let c = parse(
        &tcp("proxy_protocol = true\nproxy_from = [\"10.0.0.0/8\", \"::1\"]\n"),
        "t",
    )
    .unwrap();
    let from = c.listen[0].proxy.as_ref().unwrap();
    assert_eq!(from.len(), 2);
    assert!(from[0].contains("10.1.2.3".parse().unwrap()));
    assert_eq!(parse(&tcp(""), "t").unwrap().listen[0].proxy, None);
    assert!(err(&tcp("proxy_protocol = true\n"))
        .starts_with("t.toml:1:1: proxy_protocol = true needs proxy_from"));
    assert!(err(&tcp("proxy_from = [\"10.0.0.0/8\"]\n"))
        .starts_with("t.toml:3:14: proxy_from needs proxy_protocol = true"));
    assert!(err(&tcp("proxy_protocol = true\nproxy_from = []\n"))
        .starts_with("t.toml:4:14: proxy_from is empty"));
    assert_eq!(
        err(&tcp(
            "proxy_protocol = true\nproxy_from = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n"
        )),
        "t.toml:4:29: bad address range \"10.0.0.1/8\": the address has bits set beyond the /8 prefix"
    );
    assert!(err(&tcp(
        "proxy_protocol = true\nproxy_from = [\"10.0.0.0/40\"]\n"
    ))
    .starts_with("t.toml:4:15: bad address range \"10.0.0.0/40\": prefix length above 32"));
    let unix = "[[listen]]\naddress = \"unix:/run/x.sock\"\nproxy_protocol = true\n";
    assert_eq!(parse(unix, "t").unwrap().listen[0].proxy, Some(Vec::new()));
    assert!(err(&format!("{unix}proxy_from = [\"10.0.0.0/8\"]\n"))
        .starts_with("t.toml:4:14: proxy_from does not apply to unix sockets"));
}

#[test]
fn values_are_bounded() {
    assert_eq!(
        err("[server]\nmax_connections = 1000000000000\n"),
        "t.toml:2:19: must be at most 4194304, not 1000000000000"
    );
    assert_eq!(
        err("[limits]\nmax_headers = 100000000000\n"),
        "t.toml:2:15: must be at most 10000, not 100000000000"
    );
    assert_eq!(
        err("[limits]\nmax_header_bytes = \"2MiB\"\n"),
        "t.toml:2:20: size \"2MiB\" is too large: at most 1MiB"
    );
    assert_eq!(
        err("[limits]\nbody_timeout = \"2h\"\n"),
        "t.toml:2:16: duration \"2h\" is too long: at most 1h"
    );
    assert_eq!(
        err("[limits]\nmax_body_bytes = 0\n"),
        "t.toml:2:18: size 0 must be greater than zero"
    );
    assert_eq!(
        err("[server]\nworker_reserve = -1\n"),
        "t.toml:2:18: must be an integer >= 0, not -1"
    );
    let c = parse(
        "[server]\nworker_reserve = 0\n[limits]\npark_after = \"0s\"\nmin_body_rate = 0\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.server.worker_reserve, 0);
    assert_eq!(c.limits.park_after, Duration::ZERO);
    assert_eq!(c.limits.min_body_rate, 0);
    assert_eq!(c.limits.min_send_rate, 500, "the default");
}

#[test]
fn temp_dir_is_checked_where_cgi_needs_it() {
    let cgi = "[[route]]\nprefix = \"/c/\"\ncgi = { dir = \"/srv\" }\n";
    let c = parse("", "t").unwrap();
    assert_eq!(c.server.temp_dir, Path::new(validate::DEFAULT_TEMP_DIR));
    assert_eq!(c.limits.cgi_body_in_memory, 64 << 10);
    // No CGI route: nothing will write there, nothing to check.
    let c = parse("[server]\ntemp_dir = \"/nonexistent/lbaws\"\n", "t").unwrap();
    assert_eq!(c.server.temp_dir, Path::new("/nonexistent/lbaws"));
    assert_eq!(
        err(&format!(
            "[server]\ntemp_dir = \"/nonexistent/lbaws\"\n{cgi}"
        )),
        "t.toml:2:12: temp_dir \"/nonexistent/lbaws\": no such directory"
    );
    assert_eq!(
        err("[server]\ntemp_dir = \"tmp\"\n"),
        "t.toml:2:12: temp_dir \"tmp\" must be an absolute path"
    );
    let c = parse(&format!("[limits]\ncgi_body_in_memory = 0\n{cgi}"), "t").unwrap();
    assert_eq!(c.limits.cgi_body_in_memory, 0, "every body to a file");
}

#[test]
fn durations_and_sizes() {
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    assert!(parse_duration("10").is_err());
    assert_eq!(parse_size("16KiB").unwrap(), 16384);
    assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
    assert!(parse_size("10XB").is_err());
}

#[test]
fn longest_prefix_wins() {
    let c = parse(
        "[[route]]\nprefix = \"/\"\nrespond = { status = 200, body = \"root\" }\n\
         [[route]]\nprefix = \"/api/\"\nrespond = { status = 200, body = \"api\" }\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.route("/api/x").unwrap().prefix, "/api/");
    assert_eq!(c.route("/apix").unwrap().prefix, "/");
}

#[test]
fn prefixes_match_whole_segments() {
    let c = parse(
        "[[route]]\nprefix = \"/\"\nrespond = { status = 200, body = \"root\" }\n\
         [[route]]\nprefix = \"/files\"\nrespond = { status = 200, body = \"files\" }\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.route("/files").unwrap().prefix, "/files");
    assert_eq!(c.route("/files/").unwrap().prefix, "/files");
    assert_eq!(c.route("/files/a/b").unwrap().prefix, "/files");
    assert_eq!(c.route("/filesystem.html").unwrap().prefix, "/");
    assert_eq!(c.route("/file").unwrap().prefix, "/");
}

#[test]
fn status_routes_and_allow() {
    let c = parse(
        "[[route]]\nprefix = \"/s\"\nstatus = { format = \"prometheus\" }\nallow = [\"10.0.0.0/8\", \"::1\", \"unix\"]\n\n[[route]]\nprefix = \"/t\"\nstatus = {}\n",
        "t.toml",
    )
    .unwrap();
    let s = c.route("/s").unwrap();
    assert!(matches!(s.action, Action::Status(StatusFormat::Prometheus)));
    let allow = s.allow.as_ref().unwrap();
    assert!(allow.unix && allow.ranges.len() == 2);
    let peer = |a: &str| crate::listen::Peer::Inet(a.parse().unwrap());
    assert!(allow.permits(peer("10.1.2.3:80")));
    assert!(allow.permits(peer("[::1]:80")));
    assert!(!allow.permits(peer("192.0.2.1:80")));
    assert!(allow.permits(crate::listen::Peer::Unix));
    let t = c.route("/t").unwrap();
    assert!(matches!(t.action, Action::Status(StatusFormat::Text)) && t.allow.is_none());
    assert_eq!(
        err("[[route]]\nprefix = \"/s\"\nstatus = { format = \"xml\" }\n"),
        "t.toml:3:21: unknown status format \"xml\": expected text, json or prometheus"
    );
    assert_eq!(
        err("[[route]]\nprefix = \"/s\"\nstatus = {}\nallow = [\"127.0.0.1/33\"]\n"),
        "t.toml:4:10: bad address range \"127.0.0.1/33\": prefix length above 32"
    );
    assert!(err("[[route]]\nprefix = \"/s\"\nstatus = {}\nallow = []\n")
        .contains("allow needs at least one address range"));
    assert!(
        err("[[route]]\nprefix = \"/s\"\nstatus = {}\nrespond = { status = 200 }\n")
            .contains("a route has one action")
    );
}

#[test]
fn admission_defaults_bounds_and_the_old_per_ip_key() {
    let c = parse("", "t").unwrap();
    assert_eq!(c.server.worker_reserve, 64, "an eighth of max_connections");
    assert_eq!(c.pending_per_source(1000), 250, "a quarter of max_pending");
    assert_eq!(c.limits.queue_timeout, Duration::from_secs(10));
    assert!(c.warnings.is_empty());
    let c = parse("[server]\nmax_connections = 16\n", "t").unwrap();
    assert_eq!(c.server.worker_reserve, 2);
    assert_eq!(
        err("[server]\nmax_connections = 16\nworker_reserve = 17\n"),
        "t.toml:3:18: worker_reserve = 17 is more than max_connections (16)"
    );
    let c = parse("[server]\nmax_pending_per_source = 5000\n", "t").unwrap();
    assert_eq!(
        c.pending_per_source(1000),
        1000,
        "never more than max_pending"
    );
    // The key of lbaws 0.3: accepted with a warning at its place; 0 (off)
    // still turns the per-source limits off.
    let c = parse("[server]\nmax_connections_per_ip = 64\n", "t.toml").unwrap();
    assert_eq!(c.server.worker_reserve, 64);
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with("t.toml:2:26: max_connections_per_ip is no longer used"),
        "{:?}",
        c.warnings
    );
    let c = parse("[server]\nmax_connections_per_ip = 0\n", "t").unwrap();
    assert_eq!(c.server.worker_reserve, 0);
    assert_eq!(c.pending_per_source(1000), 1000);
    let c = parse(
        "[server]\nmax_connections_per_ip = 0\nworker_reserve = 8\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.server.worker_reserve, 8, "set: it wins");
    assert_eq!(
        err("[limits]\nqueue_timeout = \"2h\"\n"),
        "t.toml:2:17: duration \"2h\" is too long: at most 1h"
    );
}

#[test]
fn cgi_limits_stderr_and_sandbox_grants() {
    let route = |cgi_extra: &str, sandbox: &str| {
        format!(
            "[server]\ntemp_dir = \"/tmp\"\n[[route]]\nprefix = \"/a\"\ncgi = {{ script = \"/x\"{cgi_extra} }}\n{sandbox}"
        )
    };
    let cgi = |c: &Config| match &c.routes[0].action {
        Action::Cgi(c) => c.clone(),
        _ => panic!(),
    };
    // Defaults.
    let c = cgi(&parse(&route("", ""), "t").unwrap());
    assert_eq!(c.limits, CgiLimits::default());
    assert_eq!(
        (c.limits.processes, c.limits.memory, c.limits.cpu_secs),
        (64, 512 << 20, 60)
    );
    assert_eq!(c.stderr, 16 << 10);
    // Set, a part of a CPU second rounded up.
    let c = cgi(&parse(
        &route(
            ", limits = { processes = 8, memory = \"64MiB\", cpu = \"1500ms\", open_files = 64, file_size = \"1MiB\" }, stderr = 0",
            "sandbox = { connect_unix = [\"/run/pg.sock\"], udp_ports = [53] }\n",
        ),
        "t",
    )
    .unwrap());
    assert_eq!(
        c.limits,
        CgiLimits {
            processes: 8,
            memory: 64 << 20,
            cpu_secs: 2,
            open_files: 64,
            file_size: 1 << 20
        }
    );
    assert_eq!(c.stderr, 0);
    assert_eq!(c.widen.connect_unix, vec![PathBuf::from("/run/pg.sock")]);
    assert_eq!(c.widen.udp_ports, vec![53]);
    // Bounds and mistakes, where they are written.
    for (extra, sandbox, want) in [
        (
            ", limits = { processes = 0 }",
            "",
            "t.toml:5:47: must be a positive integer, not 0",
        ),
        (
            ", limits = { processes = 65537 }",
            "",
            "t.toml:5:47: must be at most 65536",
        ),
        (
            ", limits = { memory = \"1KiB\" }",
            "",
            "t.toml:5:44: size \"1KiB\" is too small: at least 1MiB",
        ),
        (
            ", limits = { cpu = \"0s\" }",
            "",
            "t.toml:5:41: duration \"0s\" must be greater than zero",
        ),
        (
            ", limits = { cpu = \"25h\" }",
            "",
            "t.toml:5:41: duration \"25h\" is too long: at most 24h",
        ),
        (
            ", limits = { open_files = 2 }",
            "",
            "t.toml:5:48: must be an integer >= 3, not 2",
        ),
        (
            ", limits = { threads = 2 }",
            "",
            "t.toml:5:35: unknown field `threads`",
        ),
        (
            ", stderr = \"2GiB\"",
            "",
            "t.toml:5:33: size \"2GiB\" is too large: at most 1GiB",
        ),
        (
            "",
            "sandbox = { udp_ports = [0] }\n",
            "t.toml:6:26: sandbox udp_ports: port 0",
        ),
        (
            "",
            "sandbox = { connect_unix = [\"run/x\"] }\n",
            "t.toml:6:29: sandbox connect_unix path \"run/x\" must be absolute",
        ),
    ] {
        let e = err(&route(extra, sandbox));
        assert!(e.starts_with(want), "{extra} {sandbox}: {e}");
    }
    let long = format!(
        "sandbox = {{ connect_unix = [\"/{}\"] }}\n",
        "s".repeat(107)
    );
    assert!(err(&route("", &long))
        .starts_with("t.toml:6:29: sandbox connect_unix: a socket path has at most 107 bytes"));
}

/// The route a request for `host` and `path` gets: its site's label and prefix.
fn hit(c: &Config, host: Option<&str>, path: &str) -> (String, Option<String>) {
    let h = c.pick(host, path);
    (h.site.label.clone(), h.route.map(|r| r.prefix.clone()))
}

const SITES: &str = r#"
[[site]]
names = ["example.org", "www.example.org"]
headers = { "Strict-Transport-Security" = "max-age=63072000" }
[[site.route]]
prefix = "/"
respond = { status = 200, body = "org" }
[[site.route]]
prefix = "/old"
redirect = { to = "https://{host}{uri}" }
headers = { "Cache-Control" = "no-cache", "Strict-Transport-Security" = "max-age=1" }

[[site]]
names = ["*.example.net"]
default = true
[[site.route]]
prefix = "/"
respond = { status = 200, body = "net" }
"#;

#[test]
fn sites_names_and_the_default() {
    let c = parse(SITES, "t").unwrap();
    assert_eq!(c.sites.len(), 2);
    assert_eq!(c.default_site, 1);
    let o = || Some("/".to_string());
    assert_eq!(
        hit(&c, Some("www.example.org:8080"), "/x"),
        ("example.org".into(), o())
    );
    assert_eq!(
        hit(&c, Some("a.example.net"), "/"),
        ("*.example.net".into(), o())
    );
    assert_eq!(
        hit(&c, Some("nowhere.test"), "/"),
        ("*.example.net".into(), o())
    );
    assert_eq!(hit(&c, None, "/"), ("*.example.net".into(), o()));
    assert_eq!(
        hit(&c, Some("example.org"), "/old/x").1.as_deref(),
        Some("/old")
    );
    // A route's headers win over its site's; the site's others still apply.
    let old = c.pick(Some("example.org"), "/old").route.unwrap();
    assert_eq!(
        old.fields.list,
        vec![
            ("Cache-Control".to_string(), "no-cache".to_string()),
            (
                "Strict-Transport-Security".to_string(),
                "max-age=1".to_string()
            ),
        ]
    );
    assert_eq!(
        c.sites[0].fields.block,
        "Strict-Transport-Security: max-age=63072000\r\n"
    );
    assert!(
        c.sites[0].origin.starts_with("t:2:1"),
        "{}",
        c.sites[0].origin
    );
}

#[test]
fn top_level_routes_are_the_default_site() {
    // Alone: the only site, for every host.
    let c = parse(
        "[[route]]\nprefix = \"/\"\nrespond = { status = 200 }\n",
        "t",
    )
    .unwrap();
    assert_eq!(hit(&c, Some("any.host"), "/").0, DEFAULT_LABEL);
    // With sites none of which is marked: a site of their own, the default.
    let text = format!("[[route]]\nprefix = \"/top\"\nrespond = {{ status = 200 }}\n{SITES}")
        .replace("default = true\n", "");
    let c = parse(&text, "t").unwrap();
    assert_eq!(c.sites.len(), 3);
    assert_eq!(
        hit(&c, Some("x.test"), "/top"),
        (DEFAULT_LABEL.into(), Some("/top".into()))
    );
    assert_eq!(hit(&c, Some("example.org"), "/top").1.as_deref(), Some("/"));
    // With a marked site: they join it.
    let text = format!("[[route]]\nprefix = \"/top\"\nrespond = {{ status = 200 }}\n{SITES}");
    let c = parse(&text, "t").unwrap();
    assert_eq!(c.sites.len(), 2);
    assert_eq!(
        hit(&c, Some("x.test"), "/top"),
        ("*.example.net".into(), Some("/top".into()))
    );
    // ... but not with a prefix it has too.
    let text = format!("[[route]]\nprefix = \"/\"\nrespond = {{ status = 200 }}\n{SITES}");
    assert!(parse(&text, "t")
        .unwrap_err()
        .to_string()
        .contains("duplicate route prefix \"/\""));
    // Without top-level routes or a mark, the first site is the default.
    let c = parse(&SITES.replace("default = true\n", ""), "t").unwrap();
    assert_eq!(hit(&c, Some("x.test"), "/").0, "example.org");
}

#[test]
fn site_errors_are_located() {
    let site = |body: &str| {
        format!("[[site]]\nnames = [\"a.test\"]\n{body}[[site.route]]\nprefix = \"/\"\nstatic = {{ root = \"/srv\" }}\n")
    };
    assert_eq!(
        err(&format!("{}{}", site(""), site(""))),
        "t.toml:7:10: name a.test is claimed twice: the site at t.toml:1:1 has it already"
    );
    assert_eq!(
        err(&site("default = true\n")
            .replace("a.test", "b.test")
            .add_site(&site("default = true\n"))),
        "t.toml:9:11: default = true on a second site (the first is at t.toml:1:1)"
    );
    assert_eq!(
        err("[[site]]\nnames = [\"a.test:80\"]\n"),
        "t.toml:2:10: site name \"a.test:80\": a name has letters, digits, '-', '_' and dots only (no port, no scheme)"
    );
    assert!(err("[[site]]\nnames = [\"a\"]\n[[site]]\n[[site.route]]\nprefix = \"/\"\nrespond = { status = 200 }\n")
        .starts_with("t.toml:3:1: a site needs names"));
    assert_eq!(
        err(&site("headers = { \"Content-Length\" = \"1\" }\n")),
        "t.toml:3:13: header \"Content-Length\" cannot be set: lbaws writes it (framing, hop-by-hop, or its own); Server and Cache-Control may be"
    );
    assert!(
        err(&site("headers = { \"X-A\" = \"a\\r\\nSet-Cookie: x\" }\n"))
            .starts_with("t.toml:3:21: header \"X-A\": a value has no control characters")
    );
    assert!(err(&site("headers = { \"X A\" = \"a\" }\n"))
        .starts_with("t.toml:3:13: header name \"X A\" is not a field name"));
    assert!(
        err(&site("errors = { 404 = \"/e/404.html\", 200 = \"/x\" }\n"))
            .starts_with("t.toml:3:33: errors: \"200\" is not a status")
    );
    assert!(err(&site("errors = { 404 = \"/e/../404.html\" }\n"))
        .starts_with("t.toml:3:18: error page \"/e/../404.html\" must be a plain absolute path"));
    assert!(parse(&site("errors = { 404 = \"/e/404.html\" }\n"), "t").is_ok());
    assert!(err("[[site]]\nnames = [\"a.test\"]\nerrors = { 404 = \"/e/404.html\" }\n[[site.route]]\nprefix = \"/\"\nrespond = { status = 200 }\n")
        .starts_with("t.toml:3:18: error page \"/e/404.html\": no static route of this site serves it"));
    assert!(err(&site("access = \"relative.log\"\n")).starts_with("t.toml:3:10: site access log"));
    assert!(
        err("[[route]]\nprefix = \"/\"\nredirect = { to = \"https://{host}{nope}\" }\n")
            .starts_with(
                "t.toml:3:19: redirect target \"https://{host}{nope}\": unknown placeholder {nope}"
            )
    );
    assert!(
        err("[log]\naccess_format = \"xml\"\n").starts_with("t.toml:2:17: access_format \"xml\"")
    );
    let c = parse(
        &site("access = \"/var/log/a.log\"\n")
            .replace("a.test", "b.test")
            .add_site(&site("access = \"/var/log/a.log\"\n")),
        "t",
    )
    .unwrap();
    assert_eq!(c.log.site_files, vec![PathBuf::from("/var/log/a.log")]);
    assert_eq!(c.sites[1].access, SiteLog::File(0));
    // A site without routes is accepted, with a word.
    let c = parse("[[site]]\nnames = [\"a.test\"]\n", "t").unwrap();
    assert_eq!(
        c.warnings,
        vec!["t:1:1: site a.test has no routes: every request for it gets 404".to_string()]
    );
}

trait AddSite {
    fn add_site(&self, other: &str) -> String;
}
impl AddSite for String {
    fn add_site(&self, other: &str) -> String {
        format!("{self}{other}")
    }
}

#[test]
fn includes_name_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("sites.d")).unwrap();
    let main = d.join("config.toml");
    std::fs::write(&main, "include = [\"sites.d/*.toml\", \"none/*.toml\"]\n").unwrap();
    std::fs::write(d.join("sites.d/b.toml"), "[[site]]\nnames = [\"b.test\"]\n[[site.route]]\nprefix = \"/\"\nrespond = { status = 200 }\n").unwrap();
    std::fs::write(d.join("sites.d/a.toml"), "[[site]]\nnames = [\"a.test\"]\n[[site.route]]\nprefix = \"/\"\nrespond = { status = 200 }\n").unwrap();
    std::fs::write(d.join("sites.d/.swap.toml"), "garbage").unwrap();
    std::fs::write(d.join("sites.d/c.toml.dpkg-old"), "garbage").unwrap();
    let c = load(Some(&main)).unwrap();
    let labels: Vec<&str> = c.sites.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        ["a.test", "b.test"],
        "sorted, dotfiles and other names left"
    );
    assert_eq!(c.default_site, 0);
    // An error in an included file is reported there.
    std::fs::write(d.join("sites.d/b.toml"), "[[site]]\nnames = [\"b.test\"]\n[[site.route]]\nprefix = \"nope\"\nrespond = { status = 200 }\n").unwrap();
    let e = load(Some(&main)).unwrap_err().to_string();
    let b = d.join("sites.d/b.toml");
    assert_eq!(
        e,
        format!(
            "{}:4:10: route prefix \"nope\" must start with '/'",
            b.display()
        )
    );
    std::fs::write(&b, "[[site]]\nnames = [\"a.test\"]\n").unwrap();
    let e = load(Some(&main)).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:2:10: name a.test is claimed twice: the site at {}:1:1",
            b.display(),
            d.join("sites.d/a.toml").display()
        )),
        "{e}"
    );
    std::fs::write(&b, "[[route]]\nprefix = \"/\"\n").unwrap();
    let e = load(Some(&main)).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:1:3: unknown field `route`", b.display())),
        "{e}"
    );
    // A loop is an error, not a hang.
    std::fs::write(&b, "include = [\"b.toml\"]\n").unwrap();
    let e = load(Some(&main)).unwrap_err().to_string();
    assert!(e.contains("is read twice"), "{e}");
    // An unreadable file is an error (a directory that matches, here).
    std::fs::remove_file(&b).unwrap();
    std::fs::create_dir(d.join("sites.d/dir.toml")).unwrap();
    let e = load(Some(&main)).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:1:12: include \"sites.d/*.toml\": ",
            main.display()
        )) && e.ends_with("is not a file"),
        "{e}"
    );
}
