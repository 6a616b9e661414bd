//! The contract with the service manager and the operator: sd_notify messages,
//! reload on SIGHUP (good and broken configs), graceful and immediate stop.

mod util;

use nix::sys::signal::Signal;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;
use util::*;

#[test]
fn notify_ready_status_reloading_stopping_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let mut mgr = Manager::bind(&path);
    let mut d = Daemon::with_config(hello_routes())
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "400000")
        .start();
    let ready = mgr.expect(&["READY=1", "STATUS="]);
    assert!(
        ready.contains(
            "0 active, 0 waiting, 0 parked; 0 served, 0 refused; listening on 127.0.0.1:"
        ),
        "{ready}"
    );
    mgr.expect(&["WATCHDOG=1"]);

    assert_eq!(get(d.addr(), "/").status, 200);
    let status = mgr.expect(&[&format!(
        "STATUS=lbaws {}: 0 active, 0 waiting, 0 parked; 1 served",
        env!("CARGO_PKG_VERSION")
    )]);
    assert!(!status.contains("READY=1"));

    d.signal(Signal::SIGHUP);
    let reloading = mgr.expect(&["RELOADING=1", "MONOTONIC_USEC="]);
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(usec > 0);
    mgr.expect(&["READY=1"]);

    d.signal(Signal::SIGTERM);
    mgr.expect(&["STOPPING=1"]);
    assert!(d.wait_exit(DEADLINE).success());
}

#[test]
fn notify_to_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("lbaws-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut mgr = Manager {
        sock,
        seen: Vec::new(),
    };
    let _d = Daemon::with_config(hello_routes())
        .env("NOTIFY_SOCKET", &format!("@{name}"))
        .start();
    mgr.expect(&["READY=1"]);
}

#[test]
fn nothing_sent_without_notify_socket() {
    // Runs, serves and stops normally with no NOTIFY_SOCKET at all.
    let mut d = Daemon::hello("");
    assert_eq!(get(d.addr(), "/").status, 200);
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(DEADLINE).success());
    assert!(!d.logs().contains("sd_notify"));
}

fn respond_config(body: &str, extra: &str) -> String {
    format!(
        "{extra}\n[[listen]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\nprefix = \"/\"\nrespond = {{ status = 200, body = \"{body}\" }}\n"
    )
}

#[test]
fn reload_applies_good_config_and_keeps_old_on_error() {
    let limits = format!("[limits]\n{NO_PARKING}");
    let mut d = Daemon::with_config(&respond_config("one", &limits)).start();
    let addr = d.addr();
    let cfg = d.path("config.toml");
    assert_eq!(get(addr, "/").body_str(), "one");

    // A worker alive while the config changes finishes on the old one.
    d.wait_no_workers();
    let mut inflight = Client::new(addr);
    assert_eq!(inflight.get("/").body_str(), "one");
    d.wait_children(1);

    write_config(&cfg, &respond_config("two", &limits));
    d.signal(Signal::SIGHUP);
    d.wait_log("reloaded configuration");
    assert_eq!(get(addr, "/").body_str(), "two");
    assert_eq!(inflight.get("/").body_str(), "one");

    // Broken: an unknown key on line 3. The old config keeps serving.
    write_config(&cfg, "[server]\nmax_connections = 8\nmax_conections = 9\n");
    d.signal(Signal::SIGHUP);
    d.wait_log("reload failed");
    assert!(
        d.logs().contains(&format!("reload failed, keeping the running configuration: {}:3:1: unknown field `max_conections`", cfg.display())),
        "{}",
        d.logs()
    );
    assert!(d.alive());
    assert_eq!(get(addr, "/").body_str(), "two");

    // Syntax error: same.
    write_config(&cfg, "[server\n");
    d.signal(Signal::SIGHUP);
    assert!(wait_for(DEADLINE, || d.count_log("reload failed") == 2));
    assert_eq!(get(addr, "/").body_str(), "two");

    // A value past its bound (once, this aborted the supervisor): same.
    write_config(
        &cfg,
        &respond_config("three", "[server]\nmax_connections = 1000000000000"),
    );
    d.signal(Signal::SIGHUP);
    assert!(wait_for(DEADLINE, || d.count_log("reload failed") == 3));
    assert!(
        d.logs()
            .contains(":2:19: must be at most 4194304, not 1000000000000"),
        "{}",
        d.logs()
    );
    assert!(d.alive());
    assert_eq!(get(addr, "/").body_str(), "two");
}

#[test]
fn reload_adds_and_removes_listeners() {
    let mut d = Daemon::with_config(&respond_config("x", "")).start();
    let addr = d.addr();
    let cfg = d.path("config.toml");
    let sock = d.path("extra.sock");
    let with_unix = format!(
        "{}\n[[listen]]\naddress = \"unix:{}\"\n",
        respond_config("x", ""),
        sock.display()
    );
    write_config(&cfg, &with_unix);
    d.signal(Signal::SIGHUP);
    d.wait_log("reloaded configuration");
    d.wait_log(&format!("listening on unix:{}", sock.display()));
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).status, 200);
    // The TCP listener was kept, not re-bound: same port.
    assert_eq!(get(addr, "/").status, 200);

    write_config(&cfg, &respond_config("x", ""));
    d.signal(Signal::SIGHUP);
    d.wait_log("no longer listening on unix:");
    assert!(wait_for(DEADLINE, || !sock.exists()));
    assert_eq!(get(addr, "/").status, 200);
}

#[test]
fn graceful_stop_finishes_requests_in_flight() {
    let mut d = Daemon::with_config(&respond_config(
        "bye",
        "[server]\nshutdown_timeout = \"30s\"",
    ))
    .start();
    let addr = d.addr();
    // A worker with a request in flight (its body still coming: the
    // answer of a fixed route does not wait for it, a CGI one would), and a
    // connection whose head is half there, waiting in the gate.
    let mut busy = Client::new(addr);
    busy.send(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab");
    assert_eq!(busy.read(false).body_str(), "bye");
    d.wait_children(1);
    let idle_gate = d.gate_fd_count();
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // half a request
    assert!(wait_for(DEADLINE, || d.gate_fd_count() == idle_gate + 1));
    d.signal(Signal::SIGTERM);
    d.wait_log("stopping gracefully, 1 request(s) in flight");
    // Self-bound listeners are closed at once: new clients are refused.
    assert!(wait_for(DEADLINE, || std::net::TcpStream::connect(addr).is_err()));
    assert!(d.alive());
    s.write_all(b"Host: t\r\n\r\n").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.body_str(), "bye");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    busy.send(b"cde");
    assert!(busy.closed(), "the worker closes after its request");
    let status = d.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn stop_timeout_terminates_stuck_workers() {
    let mut d = Daemon::with_config(&respond_config(
        "x",
        &format!("[server]\nshutdown_timeout = \"200ms\"\n[limits]\nheader_timeout = \"60s\"\n{NO_PARKING}"),
    ))
    .start();
    // A second request half sent on a kept connection: its worker is busy
    // reading it, not idle, so it does not stop by itself.
    let mut busy = Client::new(d.addr());
    assert_eq!(busy.get("/").status, 200);
    d.wait_children(1);
    busy.send(b"GET / HTTP/1.1\r\n");
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0));
    assert!(
        d.logs()
            .contains("shutdown_timeout reached: terminating 1 worker(s)"),
        "{}",
        d.logs()
    );
    assert!(d.logs().contains("at shutdown"), "{}", d.logs());
}

#[test]
fn sigquit_stops_now() {
    let mut d = Daemon::with_config(&respond_config(
        "x",
        &format!("[server]\nshutdown_timeout = \"1h\"\n[limits]\n{NO_PARKING}"),
    ))
    .start();
    let mut busy = Client::new(d.addr());
    busy.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\n");
    assert_eq!(busy.read(false).status, 200);
    d.wait_children(1);
    let worker = d.children()[0].0;
    d.signal(Signal::SIGQUIT);
    assert_eq!(d.wait_exit(DEADLINE).code(), Some(0));
    assert!(
        !std::path::Path::new(&format!("/proc/{worker}")).exists() || children_of(d.pid).is_empty()
    );
}

#[test]
fn sigusr1_reopens_logs_and_keeps_serving() {
    let mut d = Daemon::hello("");
    d.signal(Signal::SIGUSR1);
    d.wait_log("SIGUSR1: log files reopened");
    assert_eq!(get(d.addr(), "/").status, 200);
}

#[test]
fn daemon_mode_detaches_and_keeps_a_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let pid_file = dir.path().join("lbaws.pid");
    std::fs::write(&cfg, respond_config("daemon", "")).unwrap();
    // The launcher returns at once; the daemon lives on, on the port it bound.
    let (pid, guard) = start_daemonized(&cfg, &pid_file);
    let addr = wait_tcp_listen_addr(pid);
    assert_eq!(get(addr, "/").body_str(), "daemon");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    // Gone, or a zombie waiting for init to reap it.
    let ended = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    };
    assert!(wait_for(DEADLINE, ended));
    assert!(!pid_file.exists(), "pid file left behind");
    drop(guard);
}

/// `lbaws --daemon --pid-file lbaws.pid --config site.toml`, relative paths
/// from the directory it was started in: the daemon moves to `/`, yet its
/// pid file is where it was asked for, and every reload (SIGHUP) and
/// upgrade in place (SIGUSR2) reads the same file.
#[test]
fn relative_paths_hold_for_a_daemon_across_reload_and_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("site.toml");
    let config = |body: &str| respond_config(body, "");
    std::fs::write(&cfg, config("one")).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "--daemon",
            "--pid-file",
            "lbaws.pid",
            "--config",
            "site.toml",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid_file = dir.path().join("lbaws.pid");
    let read_pid = || {
        std::fs::read_to_string(&pid_file)
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()
    };
    assert!(
        wait_for(DEADLINE, || read_pid().is_some()),
        "no pid file at {}",
        pid_file.display()
    );
    let pid = read_pid().unwrap();
    let _guard = KillOnDrop(pid);
    // The port it bound (it logs to syslog: read off /proc); the listener
    // is kept across the reload and the upgrade (the same address).
    let addr = wait_tcp_listen_addr(pid);
    let body = || {
        std::net::TcpStream::connect(addr)
            .ok()
            .map(|_| get(addr, "/").body_str())
    };
    assert!(wait_for(DEADLINE, || body().as_deref() == Some("one")));

    write_config(&cfg, &config("two"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    assert!(
        wait_for(DEADLINE, || body().as_deref() == Some("two")),
        "the reload did not read site.toml: {:?}",
        body()
    );

    write_config(&cfg, &config("three"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR2).unwrap();
    assert!(
        wait_for(DEADLINE, || body().as_deref() == Some("three")),
        "the upgrade did not run on site.toml: {:?}",
        body()
    );
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert!(
        wait_for(DEADLINE, || !pid_file.exists()),
        "pid file left behind"
    );
}

/// A start that fails on the configuration says why at err priority when
/// stderr is the journal (`journalctl -p err` shows it), with the file's
/// line and column.
#[test]
fn a_start_refused_for_its_configuration_logs_at_err_priority() {
    use std::io::Read;
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[server]\nmax_connections = 0\n").unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    // What systemd sets when it connects stderr to the journal.
    let st = nix::sys::stat::fstat(writer.as_fd()).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .stderr(writer)
        .status()
        .unwrap();
    let mut err = String::new();
    reader.read_to_string(&mut err).unwrap();
    assert_eq!(out.code(), Some(78), "{err}");
    let want = format!("<3>error: {}:2:19: ", cfg.display());
    assert!(err.starts_with(&want), "{err:?}");
}
