//! Static files: content, validators and 304s, ranges, HEAD, directories and
//! listings, precompressed siblings, dotfiles, the access log, and a traversal
//! suite that must never return anything from outside the root.

mod util;

use nix::sys::signal::Signal;
use std::os::unix::fs::symlink;
use std::path::Path;
use util::*;

const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-ROOT";

/// A document tree under DIR/www, with a secret beside it (DIR/outside.txt).
fn tree(dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::create_dir_all(www.join("list/inner")).unwrap();
    std::fs::create_dir_all(www.join(".git")).unwrap();
    std::fs::write(dir.join("outside.txt"), SECRET).unwrap();
    std::fs::write(www.join("hello.txt"), "Hello, World!\n").unwrap();
    std::fs::write(www.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(www.join("sub/index.html"), "sub index\n").unwrap();
    std::fs::write(www.join("list/a.txt"), "a").unwrap();
    std::fs::write(www.join("list/we ird&<name>.txt"), "w").unwrap();
    std::fs::write(www.join("list/.hidden"), "h").unwrap();
    std::fs::write(www.join(".secret"), "dot").unwrap();
    std::fs::write(www.join(".git/config"), "dot").unwrap();
    std::fs::write(www.join("style.css"), "body{}\n").unwrap();
    std::fs::write(www.join("style.css.gz"), "GZ-BYTES").unwrap();
    std::fs::write(www.join("style.css.br"), "BR-BYTES").unwrap();
    let big: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();
    symlink("/etc", www.join("etc")).unwrap();
    symlink("../outside.txt", www.join("up.txt")).unwrap();
    symlink(dir.join("outside.txt"), www.join("abs.txt")).unwrap();
    symlink("hello.txt", www.join("alias.txt")).unwrap();
    // Symlinks inside the root that lead to hidden names.
    symlink(".secret", www.join("dot_link")).unwrap();
    symlink(".git", www.join("git_link")).unwrap();
    symlink("list/.hidden", www.join("deep_link")).unwrap();
    std::fs::create_dir_all(www.join("linked")).unwrap();
    symlink("../.secret", www.join("linked/index.html")).unwrap();
}

fn daemon(extra_route: &str) -> Daemon {
    let config = format!(
        r#"
[[listen]]
address = "127.0.0.1:0"

[log]
access = "{{dir}}/access.log"

[[route]]
prefix = "/"
static = {{ root = "{{dir}}/www", precompressed = true }}

[[route]]
prefix = "/list/"
static = {{ root = "{{dir}}/www/list", autoindex = true }}
{extra_route}
"#
    );
    // The roots must exist when lbaws starts (its sandbox grants them by
    // what they are then); the files in them are made right after start.
    let d = Daemon::with_config(&config).dirs(&["www/list"]).start();
    tree(d.dir.path());
    d
}

#[test]
fn files_with_type_validators_and_head() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let r = c.get("/hello.txt");
    assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!\n"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(r.header("accept-ranges").as_deref(), Some("bytes"));
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(r.header("last-modified").is_some());
    let big = c.get("/big.bin");
    assert_eq!(big.body, std::fs::read(d.path("www/big.bin")).unwrap());
    assert_eq!(
        big.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    c.send(b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.read(true);
    assert_eq!(head.header("content-length").as_deref(), Some("65536"));
    // The same through curl, keep-alive and all.
    let out = curl(&[
        "-s",
        &format!("http://{}/hello.txt", d.addr()),
        &format!("http://{}/index.html", d.addr()),
    ]);
    assert_eq!(out, "Hello, World!\n<h1>home</h1>\n");
    // Only GET and HEAD.
    c.send(b"DELETE /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read(false);
    assert_eq!(
        (r.status, r.header("allow").as_deref()),
        (405, Some("GET, HEAD"))
    );
}

#[test]
fn conditional_requests() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let r = c.get("/hello.txt");
    let (etag, lm) = (
        r.header("etag").unwrap(),
        r.header("last-modified").unwrap(),
    );
    for h in [
        format!("If-None-Match: {etag}"),
        format!("If-None-Match: \"x\", W/{etag}"),
        format!("If-Modified-Since: {lm}"),
        "If-None-Match: *".into(),
    ] {
        c.send(format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\n{h}\r\n\r\n").as_bytes());
        let r = c.read(true);
        assert_eq!(r.status, 304, "{h}");
        assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
    }
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"other\"\r\n\r\n");
    assert_eq!(c.read(false).status, 200);
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nIf-Match: \"other\"\r\n\r\n");
    assert_eq!(c.read(false).status, 412);
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n\r\n");
    assert_eq!(c.read(false).status, 200);
}

#[test]
fn ranges() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let etag = c.get("/hello.txt").header("etag").unwrap();
    let mut range = |h: &str| {
        c.send(format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\n{h}\r\n\r\n").as_bytes());
        c.read(false)
    };
    let r = range("Range: bytes=0-4");
    assert_eq!((r.status, r.body_str().as_str()), (206, "Hello"));
    assert_eq!(r.header("content-range").as_deref(), Some("bytes 0-4/14"));
    let r = range("Range: bytes=-3");
    assert_eq!((r.status, r.body_str().as_str()), (206, "d!\n"));
    let r = range("Range: bytes=7-");
    assert_eq!((r.status, r.body_str().as_str()), (206, "World!\n"));
    let r = range("Range: bytes=7-1000");
    assert_eq!(r.header("content-range").as_deref(), Some("bytes 7-13/14"));
    let r = range("Range: bytes=100-200");
    assert_eq!(
        (r.status, r.header("content-range").as_deref()),
        (416, Some("bytes */14"))
    );
    let r = range("Range: bytes=0-1, 5-6");
    assert_eq!(
        (r.status, r.body.len()),
        (200, 14),
        "several ranges: the whole file"
    );
    let r = range("Range: lines=1-2");
    assert_eq!(r.status, 200, "unknown unit ignored");
    let r = range(&format!("Range: bytes=0-4\r\nIf-Range: {etag}"));
    assert_eq!(r.status, 206);
    let r = range("Range: bytes=0-4\r\nIf-Range: \"stale\"");
    assert_eq!(r.status, 200);
    // A range of the big file, through sendfile at an offset.
    let want = std::fs::read(d.path("www/big.bin")).unwrap();
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=40000-50000\r\n\r\n");
    assert_eq!(c.read(false).body, want[40000..=50000]);
}

#[test]
fn directories_index_and_listing() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let r = c.get("/sub?x=1");
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (301, Some("/sub/?x=1"))
    );
    assert_eq!(c.get("/sub/").body_str(), "sub index\n");
    assert_eq!(c.get("/").body_str(), "<h1>home</h1>\n");
    let r = c.get("/list/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let html = r.body_str();
    assert!(html.contains("<a href=\"./a.txt\">a.txt</a>"), "{html}");
    assert!(html.contains("<a href=\"./inner/\">inner/</a>"), "{html}");
    assert!(
        html.contains("<a href=\"./we%20ird&amp;%3Cname%3E.txt\">we ird&amp;&lt;name&gt;.txt</a>"),
        "{html}"
    );
    assert!(!html.contains("hidden"), "dotfiles listed: {html}");
    // Without autoindex and without an index file: 403.
    std::fs::create_dir(d.path("www/empty")).unwrap();
    assert_eq!(c.get("/empty/").status, 403);
    assert_eq!(c.get("/missing.txt").status, 404);
}

#[test]
fn precompressed_siblings() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    let mut get = |ae: &str| {
        c.send(
            format!("GET /style.css HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {ae}\r\n\r\n")
                .as_bytes(),
        );
        c.read(false)
    };
    let r = get("gzip, br");
    assert_eq!(
        (
            r.body_str().as_str(),
            r.header("content-encoding").as_deref()
        ),
        ("BR-BYTES", Some("br"))
    );
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/css; charset=utf-8")
    );
    let r = get("gzip");
    assert_eq!(
        (
            r.body_str().as_str(),
            r.header("content-encoding").as_deref()
        ),
        ("GZ-BYTES", Some("gzip"))
    );
    let r = get("br;q=0, gzip;q=0");
    assert_eq!(
        (r.body_str().as_str(), r.header("content-encoding")),
        ("body{}\n", None)
    );
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
}

#[test]
fn dotfiles_are_refused() {
    let d = daemon("");
    let mut c = Client::new(d.addr());
    assert_eq!(c.get("/.secret").status, 403);
    assert_eq!(c.get("/.git/config").status, 403);
    assert_eq!(c.get("/list/.hidden").status, 403);
    // Nor through a symlink inside the root that leads to one.
    for path in ["/dot_link", "/git_link/config", "/deep_link", "/linked/"] {
        let r = c.get(path);
        assert_eq!(r.status, 403, "{path}");
        assert!(!r.body_str().contains("dot"), "{path}");
    }
    // A symlink to a visible name is still followed.
    assert_eq!(c.get("/alias.txt").body_str(), "Hello, World!\n");
}

#[test]
fn traversal_never_leaves_the_root() {
    let d = daemon("");
    let targets = [
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E/outside.txt",
        "/.%2e/outside.txt",
        "/sub/../../outside.txt",
        "/sub/%2e%2e/%2e%2e/outside.txt",
        "/..%2foutside.txt",
        "/%2e%2e%2foutside.txt",
        "/%252e%252e/outside.txt",
        "/%252e%252e%252foutside.txt",
        "/hello.txt%00.html",
        "/%00",
        "//../outside.txt",
        "/./../outside.txt",
        "/..\\outside.txt",
        "/up.txt",
        "/abs.txt",
        "/etc/passwd",
        "/etc/hostname",
        "/etc",
        "/etc/",
        "http://t/../outside.txt",
        "/list/../../outside.txt",
        "/list/%2e%2e/%2e%2e/outside.txt",
    ];
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "\u{0}".into());
    for t in targets {
        let r = exchange(
            d.addr(),
            format!("GET {t} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let body = r.body_str();
        assert!(
            [400, 403, 404].contains(&r.status),
            "{t}: status {}",
            r.status
        );
        assert!(
            !body.contains(SECRET),
            "{t} leaked the file outside the root"
        );
        assert!(
            passwd.is_empty() || !body.contains("root:x:0:0"),
            "{t} leaked /etc/passwd"
        );
        assert!(
            !body.contains(hostname.trim()) || hostname.trim().is_empty(),
            "{t} leaked /etc/hostname"
        );
    }
    // A symlink that stays inside the root is fine.
    assert_eq!(get(d.addr(), "/alias.txt").body_str(), "Hello, World!\n");
}

#[test]
fn access_log_lines_and_reopen() {
    let mut d = daemon("");
    let mut c = Client::new(d.addr());
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nReferer: http://ref.example/\r\nUser-Agent: tester/1.0 \"quoted\"\r\n\r\n");
    c.read(false);
    assert_eq!(c.get("/missing").status, 404);
    let log = d.path("access.log");
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&log)
        .is_ok_and(|s| s.lines().count() >= 2)));
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap();
    // 127.0.0.1 - - [29/Nov/2026:12:00:00 +0000] "GET /hello.txt HTTP/1.1" 200 14 "http://ref.example/" "tester/1.0 \"quoted\""
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(first.ends_with("] \"GET /hello.txt HTTP/1.1\" 200 14 \"http://ref.example/\" \"tester/1.0 \\\"quoted\\\"\""), "{first}");
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .contains("\"GET /missing HTTP/1.1\" 404 "),
        "{text}"
    );
    // logrotate: move the file away, SIGUSR1, the next line goes to a new file.
    std::fs::rename(&log, d.path("access.log.1")).unwrap();
    d.signal(Signal::SIGUSR1);
    d.wait_log("SIGUSR1: log files reopened");
    assert_eq!(get(d.addr(), "/hello.txt").status, 200);
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&log)
        .is_ok_and(|s| s.contains("GET /hello.txt"))));
    // A refused request is logged too.
    exchange(d.addr(), b"GET / HTTP/1.1\r\n\r\n");
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&log)
        .is_ok_and(
            |s| s.contains("\"GET / HTTP/1.1\" 400") || s.contains("\"-\" 400")
        )));
}

#[test]
fn a_client_that_stops_reading_does_not_hold_a_worker() {
    // body_timeout is how long a response may stall.
    let config = r#"
[[listen]]
address = "127.0.0.1:0"

[limits]
body_timeout = "300ms"

[[route]]
prefix = "/"
static = { root = "{dir}/www" }
"#;
    let d = Daemon::with_config(config).dirs(&["www"]).start();
    // Far more than the socket buffers hold: the worker blocks in sendfile.
    std::fs::File::create(d.path("www/huge.bin"))
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let mut c = Client::new(d.addr());
    c.send(b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    d.wait_children(1);
    // Never read: the send times out and the worker ends, connection still open.
    d.wait_no_workers();
    drop(c);
}

#[test]
fn an_aborted_download_is_a_normal_end_with_its_access_line() {
    // The client reads a little and leaves: the worker's sendfile gets EPIPE
    // (SIGPIPE stays ignored in workers), it exits 0 without a warning, and
    // the access log has the status and the body bytes that went out.
    let d = daemon("");
    std::fs::File::create(d.path("www/huge.bin"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    for _ in 0..20 {
        let mut s = connect(d.addr());
        std::io::Write::write_all(&mut s, b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 1000];
        std::io::Read::read_exact(&mut s, &mut buf).unwrap();
        // Close with unread data: the client's kernel answers with a reset.
        drop(s);
    }
    d.wait_no_workers();
    let log = d.path("access.log");
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&log)
        .is_ok_and(|l| l
            .matches("\"GET /huge.bin HTTP/1.1\" 200 ")
            .count()
            == 20)));
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines().filter(|l| l.contains("/huge.bin")) {
        let bytes: u64 = line
            .split("\" 200 ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(bytes < 64 << 20, "only what went out: {line}");
    }
    assert!(!d.logs().contains("killed by signal"), "{}", d.logs());
    assert!(!d.logs().contains("warn:"), "{}", d.logs());
}

/// Prefixes match whole path segments: `/files` answers `/files` and
/// `/files/...`, and `/filesystem.html` belongs to `/`.
#[test]
fn a_prefix_matches_whole_segments() {
    let d = Daemon::with_config(
        r#"
[[listen]]
address = "127.0.0.1:0"

[[route]]
prefix = "/"
static = { root = "{dir}/www" }

[[route]]
prefix = "/files"
static = { root = "{dir}/files" }

[[route]]
prefix = "/api/"
respond = { status = 200, body = "api\n" }
"#,
    )
    .dirs(&["www", "files"])
    .start();
    std::fs::write(d.path("www/filesystem.html"), "from the site\n").unwrap();
    std::fs::write(d.path("files/ystem.html"), "wrong root\n").unwrap();
    std::fs::write(d.path("files/a.txt"), "a file\n").unwrap();
    std::fs::write(d.path("www/apix"), "not the api\n").unwrap();
    let r = get(d.addr(), "/filesystem.html");
    assert_eq!((r.status, r.body_str().as_str()), (200, "from the site\n"));
    let r = get(d.addr(), "/files/a.txt");
    assert_eq!((r.status, r.body_str().as_str()), (200, "a file\n"));
    // The prefix itself is its directory (redirected to the slash form).
    let r = get(d.addr(), "/files");
    assert_eq!(r.status, 301, "{}", r.head);
    // A prefix ending in '/' matches what begins with it, as before.
    let r = get(d.addr(), "/api/x");
    assert_eq!((r.status, r.body_str().as_str()), (200, "api\n"));
    let r = get(d.addr(), "/apix");
    assert_eq!((r.status, r.body_str().as_str()), (200, "not the api\n"));
}

fn sh(cmd: &str, dir: &Path) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// A static root that changes under lbaws, the way deploys change it: a
/// symlink swapped (`ln -sfn releases/2 current.new && mv -T current.new
/// current`, as Capistrano does) or a directory renamed over (`mv www
/// www.old && mv www.new www`). The sandbox's rules follow the configured
/// path: the next request is served from the new directory, no SIGHUP. A
/// worker forked before the change, whose rules still name the old one, says
/// why it cannot serve (a logged 503 with Retry-After, then it closes), never
/// a silent 403.
#[test]
fn a_static_root_swapped_by_a_deploy_is_served_at_once() {
    let mut d = Daemon::with_config(&format!(
        r#"
[[listen]]
address = "127.0.0.1:0"

[limits]
{NO_PARKING}

[[route]]
prefix = "/site"
static = {{ root = "{{dir}}/current" }}

[[route]]
prefix = "/www"
static = {{ root = "{{dir}}/www" }}

[[route]]
prefix = "/late"
static = {{ root = "{{dir}}/late" }}

[[route]]
prefix = "/"
respond = {{ status = 200, body = "hello\n" }}
"#
    ))
    .setup(|dir| {
        for (rel, body) in [
            ("releases/1", "one\n"),
            ("releases/2", "two\n"),
            ("releases/3", "three\n"),
        ] {
            std::fs::create_dir_all(dir.join(rel)).unwrap();
            std::fs::write(dir.join(rel).join("index.html"), body).unwrap();
        }
        for (rel, body) in [("www", "www one\n"), ("www.new", "www two\n")] {
            std::fs::create_dir_all(dir.join(rel)).unwrap();
            std::fs::write(dir.join(rel).join("hello.txt"), body).unwrap();
        }
        std::os::unix::fs::symlink("releases/1", dir.join("current")).unwrap();
    })
    .start();
    let addr = d.addr();
    let dir = d.dir.path().to_path_buf();
    let body = |path: &str| {
        let r = get(addr, path);
        (r.status, r.body_str())
    };
    assert_eq!(body("/site/index.html"), (200, "one\n".into()));
    assert_eq!(body("/www/hello.txt"), (200, "www one\n".into()));

    sh(
        "ln -sfn releases/2 current.new && mv -T current.new current",
        &dir,
    );
    assert_eq!(
        body("/site/index.html"),
        (200, "two\n".into()),
        "{}",
        d.logs()
    );
    sh("mv www www.old && mv www.new www", &dir);
    assert_eq!(
        body("/www/hello.txt"),
        (200, "www two\n".into()),
        "{}",
        d.logs()
    );
    d.wait_log("now names another file");
    // A root that did not exist at start (warned: it granted nothing).
    assert!(d.logs().contains("late does not exist"), "{}", d.logs());
    sh("mkdir late && echo late > late/x.txt", &dir);
    assert_eq!(body("/late/x.txt"), (200, "late\n".into()), "{}", d.logs());

    // A keep-alive worker forked before the next deploy.
    let mut c = Client::new(addr);
    assert_eq!(c.get("/").status, 200);
    sh(
        "ln -sfn releases/3 current.new && mv -T current.new current",
        &dir,
    );
    let r = c.get("/site/index.html");
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"), "{}", r.head);
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "{}",
        r.head
    );
    assert!(c.closed());
    d.wait_log("changed since this worker's sandbox was made");
    // Its next connection gets a fresh worker, with rules for releases/3.
    assert_eq!(
        body("/site/index.html"),
        (200, "three\n".into()),
        "{}",
        d.logs()
    );
}
