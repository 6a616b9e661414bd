//! Signals meant for the supervisor reach every process of lbaws when a
//! terminal sends them to its foreground process group (Ctrl-C) or
//! `systemctl kill` to the whole cgroup (its default). The gate and the
//! workers run in process groups of their own and ignore them: a download
//! in flight completes, the gate lives on.

mod util;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::TcpStream;
use util::*;

const BIG: usize = 32 << 20;

const CONFIG: &str = r#"
[[listen]]
address = "127.0.0.1:0"

[[route]]
prefix = "/big"
static = { root = "{dir}/www" }

[[route]]
prefix = "/"
respond = { status = 200, body = "Hello, World!\n", content_type = "text/plain" }
"#;

/// A daemon serving a big file, and a download of it in flight: its head
/// and a first piece read, the rest waiting in its worker.
fn download_in_flight() -> (Daemon, TcpStream, Vec<u8>) {
    let d = Daemon::with_config(CONFIG).dirs(&["www"]).start();
    let body: Vec<u8> = (0..BIG as u32).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(d.path("www/file.bin"), &body).unwrap();
    let mut s = connect(d.addr());
    s.write_all(b"GET /big/file.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = vec![0u8; 64 << 10];
    s.read_exact(&mut got).unwrap();
    d.wait_children(1);
    (d, s, got)
}

/// Read the rest of the download; it must be whole.
fn finish(mut s: TcpStream, mut got: Vec<u8>, d: &Daemon) {
    s.read_to_end(&mut got).unwrap();
    let start = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        got.len() - start,
        BIG,
        "the download was cut; log:\n{}",
        d.logs()
    );
}

/// Field 5 of /proc/PID/stat: the process group.
fn pgid_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// The ignored signals of a process (SigIgn in /proc/PID/status).
fn sig_ign(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("SigIgn:")).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn ctrl_c_reaches_only_the_supervisor_which_stops_gracefully() {
    let (mut d, s, got) = download_in_flight();
    let worker = d.children()[0].0;
    let gate = d.wait_gate();
    // The harness starts lbaws as the leader of a process group, as a shell
    // does with a job in the foreground; its children are not in it.
    assert_eq!(pgid_of(d.pid), d.pid);
    assert_ne!(pgid_of(worker), d.pid);
    assert_ne!(pgid_of(gate), d.pid);
    // What the terminal does on Ctrl-C.
    killpg(Pid::from_raw(d.pid), Signal::SIGINT).unwrap();
    d.wait_log("SIGINT: stopping gracefully, 1 request(s) in flight");
    finish(s, got, &d);
    assert_eq!(d.wait_exit(DEADLINE).code(), Some(0), "{}", d.logs());
    assert!(!d.logs().contains("killed by"), "{}", d.logs());
}

#[test]
fn the_supervisors_signals_sent_to_every_process_reach_only_it() {
    let (mut d, s, got) = download_in_flight();
    let gate = d.wait_gate();
    let children: Vec<i32> = procs_of(d.pid).iter().map(|p| p.pid).collect();
    let worker = d.children()[0].0;
    let ignored = [1, 2, 3, 10, 12, 22]
        .iter()
        .fold(0u64, |b, s| b | 1 << (s - 1));
    assert_eq!(sig_ign(worker) & ignored, ignored, "{:x}", sig_ign(worker));
    assert_eq!(sig_ign(gate) & ignored, ignored, "{:x}", sig_ign(gate));
    // `systemctl kill -s USR1 lbaws.service` (--kill-whom=all): each process
    // of the service, the supervisor first.
    for sig in [Signal::SIGUSR1, Signal::SIGHUP] {
        for &p in std::iter::once(&d.pid).chain(&children) {
            kill(Pid::from_raw(p), sig).unwrap();
        }
    }
    // The supervisor's own work only: SIGUSR2 would upgrade it; its children
    // ignore it too.
    for &p in &children {
        kill(Pid::from_raw(p), Signal::SIGUSR2).unwrap();
        kill(Pid::from_raw(p), Signal::SIGQUIT).unwrap();
        kill(Pid::from_raw(p), Signal::SIGINT).unwrap();
    }
    d.wait_log("SIGUSR1: log files reopened");
    d.wait_log("reloaded configuration from");
    finish(s, got, &d);
    assert_eq!(
        d.gate(),
        Some(gate),
        "the gate lives on; log:\n{}",
        d.logs()
    );
    assert_eq!(get(d.addr(), "/").status, 200);
    d.wait_no_workers();
    for bad in ["killed by", "exited with code", "restarting it"] {
        assert!(!d.logs().contains(bad), "{bad:?} in\n{}", d.logs());
    }
    assert!(d.alive());
}
