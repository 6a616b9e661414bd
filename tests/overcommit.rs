//! Under strict overcommit (`vm.overcommit_memory = 2`) every fork is
//! charged the parent's writable private memory. The worker arena's 64 MiB
//! reservation is inaccessible (`PROT_NONE`), so it is charged nothing: many
//! workers live at once where the commit limit leaves room for only a few
//! dozen 64 MiB charges. (lbaws starts under that mode: a mapping is
//! charged or not by the mode in force when it was made.)
//!
//! The setting is the whole machine's: this test is a binary of its own
//! (cargo runs test binaries one after the other) with a single test, and
//! it puts the three settings back as they were when it ends, panicking
//! or not. It needs root; in CI (as root) it never skips.

mod util;

use util::*;

const VM: &str = "/proc/sys/vm";

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{VM}/{name}"))
        .unwrap()
        .trim()
        .to_string()
}

fn write(name: &str, v: &str) -> std::io::Result<()> {
    std::fs::write(format!("{VM}/{name}"), v)
}

fn meminfo_kb(key: &str) -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = m.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The overcommit settings as they were; put back when dropped.
struct Restore {
    mode: String,
    ratio: String,
    kbytes: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // The mode first, so that nothing else runs under strict
        // accounting a moment longer than needed; writing the ratio clears
        // kbytes (and the other way round), so the one in use goes last.
        let _ = write("overcommit_memory", &self.mode);
        let _ = write("overcommit_ratio", &self.ratio);
        if self.kbytes != "0" {
            let _ = write("overcommit_kbytes", &self.kbytes);
        }
    }
}

#[test]
fn workers_cost_no_arena_commit_under_strict_overcommit() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: this test must not skip"
        );
        eprintln!("skipped: needs root (vm.overcommit_memory)");
        return;
    }
    const WORKERS: usize = 64;
    let _restore = Restore {
        mode: read("overcommit_memory"),
        ratio: read("overcommit_ratio"),
        kbytes: read("overcommit_kbytes"),
    };
    // Room for about 24 charges of 64 MiB above what is committed now
    // (other processes on the machine get strict accounting too, for the
    // moment this test runs: the headroom is theirs as well).
    let headroom_kb = 3 << 19;
    let limit_kb =
        (meminfo_kb("Committed_AS:") + headroom_kb).saturating_sub(meminfo_kb("SwapTotal:"));
    write("overcommit_kbytes", &limit_kb.max(1).to_string()).unwrap();
    write("overcommit_memory", "2").unwrap();
    // Started under it: a mapping is charged or not by the mode when it
    // was made (MAP_NORESERVE is not honoured under mode 2).
    let mut d = Daemon::with_config(&format!(
        "[server]\nmax_connections = 80\nmax_connections_per_ip = 0\n[limits]\n{NO_PARKING}\n{}",
        hello_routes()
    ))
    .start();
    let addr = d.addr();
    let mut clients = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..WORKERS {
        let mut c = Client::new(addr);
        statuses.push(c.get("/").status);
        clients.push(c); // its worker stays (no parking)
    }
    let held = d.children().len();
    drop(_restore);
    assert!(
        statuses.iter().all(|&s| s == 200),
        "statuses {statuses:?}; log:\n{}",
        d.logs()
    );
    assert_eq!(held, WORKERS, "{}", d.logs());
    assert!(!d.logs().contains("fork failed"), "{}", d.logs());
    drop(clients);
    d.wait_no_workers();
    assert!(d.alive());
}
