//! Socket sources: systemd socket activation (through the real
//! `systemd-socket-activate`), Unix sockets, inetd mode; and descriptor and
//! environment hygiene (close-on-exec everywhere, LISTEN_* not inherited).

mod util;

use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;
use util::*;

const O_CLOEXEC: u32 = 0o2000000;

/// lbaws under `systemd-socket-activate`, which gets a listener bound here
/// (an ephemeral port of 127.0.0.1) and passes it on named `fdname`; the
/// daemon, ready, and the socket's address.
fn activate(fdname: &str, config: &str) -> (Daemon, std::net::SocketAddr) {
    if !have("systemd-socket-activate") {
        panic!(
            "systemd-socket-activate missing: install Debian's systemd package (scripts/test does)"
        );
    }
    let listener = loopback_listener();
    let addr = listener.local_addr().unwrap();
    let name = format!("--fdname={fdname}");
    // The activator starts lbaws on the first connection: make one.
    let mut d = Daemon::with_config(config)
        .listener(listener)
        .wrapper(&["systemd-socket-activate", &name])
        .no_wait()
        .start();
    assert!(wait_for(DEADLINE, || std::net::TcpStream::connect(addr).is_ok()));
    d.wait_log("info: ready:");
    d.wait_no_workers();
    (d, addr)
}

#[test]
fn socket_activation_matches_listener_by_name() {
    let config = r#"
[[listen]]
address = "127.0.0.1:1"   # not bound: socket-activated lbaws binds nothing
name = "web"

[[route]]
prefix = "/"
respond = { status = 200, body = "activated\n" }
"#;
    let (mut d, addr) = activate("web", config);
    d.wait_log(&format!("listening on {addr} (web) [from systemd]"));
    assert_eq!(get(addr, "/").body_str(), "activated\n");
    assert!(
        !d.logs().contains("127.0.0.1:1 "),
        "bound the config address:\n{}",
        d.logs()
    );

    // Hygiene: every descriptor but 0-2 is close-on-exec, inherited ones included.
    for (fd, flags) in d.fd_flags() {
        if fd > 2 {
            assert!(
                flags & O_CLOEXEC != 0,
                "fd {fd} is not close-on-exec (flags {flags:o})"
            );
        }
    }
    // (That no child inherits LISTEN_* or NOTIFY_SOCKET shows in what an exec'd
    // program sees; /proc/PID/environ keeps the variables a process started with.)
    // TCP_DEFER_ACCEPT is set on systemd's socket too (fd 3).
    assert!(
        defer_accept_of(d.pid, 3) > 0,
        "TCP_DEFER_ACCEPT on the passed socket"
    );
    let _held = connect(addr);
    // Graceful stop leaves systemd's socket alone (we only close our copy by exiting).
    d.signal(Signal::SIGTERM);
    drop(_held);
    assert!(d.wait_exit(DEADLINE).success());
}

#[test]
fn socket_activation_with_unmatched_name_serves_with_defaults() {
    let (mut d, addr) = activate("other", util::hello_routes());
    d.wait_log("matches no [[listen]] name; serving it with defaults");
    assert_eq!(get(addr, "/").status, 200);
}

#[test]
fn unix_socket_listener_replaces_stale_file_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("http.sock");
    // A stale socket file, as a crashed server leaves it.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let config = format!(
        "[[listen]]\naddress = \"unix:{}\"\nmode = \"0660\"\n{}",
        sock.display(),
        "[[route]]\nprefix = \"/\"\nrespond = { status = 200, body = \"over unix\\n\" }\n"
    );
    let mut d = Daemon::with_config(&config).start();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o660
    );
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!((r.status, r.body_str().as_str()), (200, "over unix\n"));
    // A second server on the same live socket is refused, not allowed to steal it.
    let second = Command::new(BIN)
        .arg("--config")
        .arg(d.path("config.toml"))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(71));
    assert!(String::from_utf8_lossy(&second.stderr).contains("address in use"));
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(DEADLINE).success());
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn bind_failure_names_address_and_errno() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("[[listen]]\naddress = \"{addr}\"\n")).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(71));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot bind {addr}: EADDRINUSE: Address already in use"
        )),
        "{err}"
    );
}

#[test]
fn ipv6_dual_stack_listener() {
    // Skip where the kernel has no IPv6 loopback.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        skip_or_fail("no IPv6 loopback");
        return;
    }
    let d = Daemon::with_config(&format!(
        "[[listen]]\naddress = \"[::]:0\"\n{}",
        "[[route]]\nprefix = \"/\"\nrespond = { status = 200, body = \"six\" }\n"
    ))
    .start();
    let port = d
        .logs()
        .split("listening on [::]:")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    for host in ["[::1]", "127.0.0.1"] {
        let a = format!("{host}:{port}").parse().unwrap();
        assert_eq!(get(a, "/").body_str(), "six", "via {host}");
    }
}

fn write_temp_config(body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        format!("[[route]]\nprefix = \"/\"\nrespond = {{ status = 200, body = \"{body}\" }}\n"),
    )
    .unwrap();
    dir
}

#[test]
fn inetd_mode_on_stdin() {
    let dir = write_temp_config("inetd");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut s = connect(addr);
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        read_response(&mut s)
    });
    let (conn, _) = listener.accept().unwrap();
    let fd: std::os::fd::OwnedFd = conn.into();
    let out = Command::new(BIN)
        .args(["--inetd", "--config"])
        .arg(dir.path().join("c.toml"))
        .stdin(Stdio::from(fd))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = client.join().unwrap();
    assert_eq!((r.status, r.body_str().as_str()), (200, "inetd"));
}

#[test]
fn inetd_mode_under_systemd_accept() {
    let dir = write_temp_config("accepted");
    let cfg = dir.path().join("c.toml");
    let listener = loopback_listener();
    let addr = listener.local_addr().unwrap();
    let mut act = with_listener("systemd-socket-activate", &listener)
        .args(["-a", "--fdname=connection", BIN, "--inetd", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate");
    drop(listener);
    let mut ok = false;
    for _ in 0..2 {
        // One instance per connection: two connections, two answers.
        let up = wait_for(DEADLINE, || {
            std::net::TcpStream::connect(addr).is_ok_and(|mut s| {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .is_ok()
                    && {
                        let mut b = Vec::new();
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        s.read_to_end(&mut b).is_ok() && parse_response(&b).body == b"accepted"
                    }
            })
        });
        ok = up;
    }
    let _ = act.kill();
    let _ = act.wait();
    assert!(ok, "no answer through systemd-socket-activate --accept");
}

#[test]
fn idle_exit_with_sockets_from_systemd_and_not_with_its_own() {
    // Under socket activation: one request, then nothing; it exits 0 after
    // the idle time (the socket stays with whoever passed it).
    let config = r#"
[server]
exit_idle_after = "1s"

[[listen]]
address = "127.0.0.1:1"
name = "web"

[[route]]
prefix = "/"
respond = { status = 200, body = "activated\n" }
"#;
    let (mut d, addr) = activate("web", config);
    d.wait_log("exits after 1s idle (sockets from systemd)");
    assert_eq!(get(addr, "/").body_str(), "activated\n");
    let status = d.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert_eq!(
        d.count_log("info: idle for 1s with sockets from systemd: exiting"),
        1,
        "{}",
        d.logs()
    );
    assert_eq!(d.count_log("idle: stopping gracefully"), 1, "{}", d.logs());

    // Its own sockets: nobody would start it again, so it stays.
    let mut d = Daemon::hello("[server]\nexit_idle_after = \"1s\"\n");
    d.wait_log("exit_idle_after ignored: the sockets are not all from systemd");
    assert_eq!(get(d.addr(), "/").status, 200);
    assert!(d.alive());
}
