//! Privilege drop and fork failure (RLIMIT_NPROC). Root is exempt from
//! RLIMIT_NPROC, so the daemon drops to `nobody`, which also shows that the
//! drop works: workers run as that user. Needs root: skipped otherwise, failed
//! in CI (CI=true).

mod util;

use std::io::Write;
use util::*;

/// The tests here run processes as `nobody`, and one of them limits how many
/// `nobody` may have: one at a time.
static NOBODY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn processes_of(uid: u32) -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                s.lines().any(|l| {
                    l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(&uid.to_string())
                })
            })
        })
        .count() as u64
}

#[test]
fn fork_failure_answers_503_and_recovers_as_unprivileged_user() {
    if !is_root() {
        skip_or_fail("needs root (to drop privileges to nobody)");
        return;
    }
    let _one_at_a_time = NOBODY.lock().unwrap_or_else(|e| e.into_inner());
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody")
        .uid
        .as_raw();
    // Room for the supervisor, the gate and two workers, no more.
    let limit = processes_of(nobody) + 4;
    let mut d = Daemon::with_config(&format!(
        "[server]\nuser = \"nobody\"\n[limits]\n{NO_PARKING}\n{}",
        hello_routes()
    ))
    .nproc(limit)
    .start();
    let addr = d.addr();
    assert_eq!(uid_of(d.pid), nobody, "supervisor runs as nobody");
    d.wait_log("running as user nobody");

    // Two keep-alive clients hold two workers (parking is off).
    let mut held: Vec<Client> = (0..2).map(|_| Client::new(addr)).collect();
    for c in &mut held {
        assert_eq!(c.get("/").status, 200);
    }
    d.wait_children(2);
    for (pid, _) in d.children() {
        assert_eq!(uid_of(pid), nobody, "worker {pid} runs as nobody");
    }
    assert_eq!(uid_of(d.wait_gate()), nobody, "the gate runs as nobody");
    // No process left for a third worker: each client gets a 503, written
    // without waiting and closed gracefully by the gate (never a reset that
    // could lose it), even with more of its request arriving after the answer.
    let started = std::time::Instant::now();
    let n = 60;
    for i in 0..n {
        let mut s = connect_from(source(i % 8), addr);
        s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 12];
        std::io::Read::read_exact(&mut s, &mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 503", "client {i}");
        let _ = s.write_all(&[b'x'; 5000]);
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut rest).expect("a clean close, no reset");
    }
    // Logged at most once a second, with a count and the errno.
    d.wait_log("fork failed ");
    let lines = d.count_log("fork failed ");
    let seconds = started.elapsed().as_secs() as usize;
    assert!(
        lines <= seconds + 2,
        "{lines} lines in {seconds}s for {n} failures:\n{}",
        d.logs()
    );
    assert!(d.logs().contains("time(s) (EAGAIN"), "{}", d.logs());
    assert!(d.alive());

    drop(held);
    d.wait_no_workers();
    assert_eq!(get(addr, "/").status, 200);
    assert!(d.alive());
}

#[test]
fn unknown_user_is_a_config_error() {
    let out = std::process::Command::new(BIN)
        .args(["check", "--config", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"[server]\nuser = \"no-such-user-lbaws\"\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "/dev/stdin:2:8: unknown user \"no-such-user-lbaws\""
    );
}

#[test]
fn pid_file_is_removed_after_the_privilege_drop_and_not_inherited() {
    if !is_root() {
        skip_or_fail("needs root (to drop privileges to nobody)");
        return;
    }
    let _one_at_a_time = NOBODY.lock().unwrap_or_else(|e| e.into_inner());
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nuser = \"nobody\"\n[limits]\n{NO_PARKING}\n{}",
            hello_routes()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // A directory nobody may not write: refused before anything starts.
    let rootdir = dir.path().join("root-only");
    std::fs::create_dir(&rootdir).unwrap();
    std::fs::set_permissions(&rootdir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--daemon")
        .arg("--pid-file")
        .arg(rootdir.join("lbaws.pid"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("user nobody could not remove it at exit"),
        "{out:?}"
    );

    // A directory nobody owns: the file is written, nobody's, kept by no
    // worker, and removed at exit.
    let rundir = dir.path().join("run");
    std::fs::create_dir(&rundir).unwrap();
    nix::unistd::chown(&rundir, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let pid_file = rundir.join("lbaws.pid");
    let (pid, guard) = start_daemonized(&cfg, &pid_file);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&pid_file).unwrap().uid(),
        nobody.uid.as_raw()
    );
    let addr = wait_tcp_listen_addr(pid);
    let mut c = Client::new(addr);
    assert_eq!(c.get("/").status, 200);
    assert!(wait_for(DEADLINE, || !children_of(pid).is_empty()));
    // A child holds everything for the instant between fork and closing
    // what it must not keep: polled, so only one that keeps it fails.
    let holders = || {
        children_of(pid)
            .into_iter()
            .filter(|(child, _)| {
                std::fs::read_dir(format!("/proc/{child}/fd"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == pid_file))
            })
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(DEADLINE, || holders().is_empty()),
        "processes holding the pid file: {:?}",
        holders()
    );
    drop(c);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_for(DEADLINE, || !pid_file.exists()),
        "pid file left behind"
    );
    drop(guard);
}
