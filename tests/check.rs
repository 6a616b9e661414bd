//! `lbaws check` / `lbaws -t`: "configuration OK", or FILE:LINE:COLUMN and exit 78.
//! The same validation runs at start-up.

mod util;

use std::process::Command;
use util::BIN;

fn check(text: &str) -> (Option<i32>, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace(path.to_str().unwrap(), "FILE"),
        path.display().to_string(),
    )
}

#[test]
fn shipped_example_config_is_ok() {
    for args in [
        &["check", "--config", "config/config.toml"][..],
        &["-t", "-c", "config/config.toml"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("configuration OK"));
    }
}

#[test]
fn bad_configs_are_located() {
    let cases: &[(&str, &str)] = &[
        // unknown key
        (
            "[server]\nmax_connections = 4\nmax_conection = 5\n",
            "FILE:3:1: unknown field `max_conection`, expected one of `user`, `group`, `max_connections`, `max_pending`, `max_pending_per_source`, `worker_reserve`, `max_connections_per_ip`, `shutdown_timeout`, `server_header`, `temp_dir`, `exit_idle_after`",
        ),
        // unknown table
        ("[serverr]\n", "FILE:1:2: unknown field `serverr`, expected one of `server`, `listen`, `log`, `limits`, `route`, `sandbox`, `site`, `include`"),
        // bad duration
        (
            "[server]\nshutdown_timeout = \"10 seconds\"\n",
            "FILE:2:20: bad duration \"10 seconds\": expected a number and a unit (ms, s, m, h), e.g. \"10s\"",
        ),
        // bad address
        (
            "[[listen]]\naddress = \"localhost:80\"\n",
            "FILE:2:11: bad address \"localhost:80\": expected IPv4:PORT, [IPv6]:PORT or unix:/absolute/path",
        ),
        // duplicate listener names
        (
            "[[listen]]\naddress = \"127.0.0.1:1\"\nname = \"a\"\n\n[[listen]]\naddress = \"127.0.0.1:2\"\nname = \"a\"\n",
            "FILE:7:8: duplicate listener name \"a\"",
        ),
        // zero limit
        ("[server]\nmax_connections = 0\n", "FILE:2:19: must be a positive integer, not 0"),
        ("[limits]\nheader_timeout = \"0s\"\n", "FILE:2:18: duration \"0s\" must be greater than zero"),
        // bad size
        ("[limits]\nmax_header_bytes = \"16 parsecs\"\n", "FILE:2:20: bad size \"16 parsecs\": expected bytes or a number with a unit, e.g. \"16KiB\""),
        // bad enum value
        ("[log]\nlevel = \"loud\"\n", "FILE:2:9: unknown level \"loud\": expected error, warn, info or debug"),
        // bad status
        (
            "[[route]]\nprefix = \"/\"\nrespond = { status = 99 }\n",
            "FILE:3:22: status 99 out of range 200-599",
        ),
        // TOML syntax
        ("[server\n", "FILE:1:8: invalid table header expected `.`, `]`"),
        // sandbox
        ("[sandbox]\nmode = \"strict\"\n", "FILE:2:8: sandbox mode \"strict\": expected \"best-effort\", \"required\" or \"off\""),
        (
            "[[route]]\nprefix = \"/\"\nrespond = { status = 200 }\nsandbox = { read = [\"/srv\"] }\n",
            "FILE:4:11: sandbox widens what a route's CGI scripts get: this route runs none",
        ),
        (
            "[[route]]\nprefix = \"/\"\ncgi = { dir = \"/srv/cgi\" }\nsandbox = { write = [\"data\"] }\n",
            "FILE:4:22: sandbox write path \"data\" must be absolute",
        ),
        // unix-only key on TCP
        ("[[listen]]\naddress = \"127.0.0.1:1\"\nmode = \"0600\"\n", "FILE:3:8: mode applies to unix sockets only"),
    ];
    for (text, want) in cases {
        let (code, stdout, stderr, _) = check(text);
        assert_eq!(code, Some(78), "{text:?}: {stderr}");
        assert!(stdout.is_empty());
        assert_eq!(&stderr, want, "for config {text:?}");
    }
}

#[test]
fn every_number_has_an_upper_bound() {
    // Each value one past its bound is refused where it is written; a
    // config that passes check can never make the supervisor allocate
    // absurd tables (lbaws.toml(5) lists the bounds).
    let over: &[(&str, &str, &str)] = &[
        ("server", "max_connections", "4194305"),
        ("server", "max_pending", "4194305"),
        ("server", "max_pending_per_source", "4194305"),
        ("server", "worker_reserve", "4194305"),
        ("server", "max_connections_per_ip", "4194305"),
        ("server", "shutdown_timeout", "\"61m\""),
        ("limits", "header_timeout", "\"2h\""),
        ("limits", "queue_timeout", "\"2h\""),
        ("limits", "max_header_bytes", "\"2MiB\""),
        ("limits", "max_headers", "10001"),
        ("limits", "max_uri_bytes", "1048577"),
        ("limits", "max_body_bytes", "\"2048GiB\""),
        ("limits", "keepalive_timeout", "\"3601s\""),
        ("limits", "park_after", "\"2h\""),
        ("limits", "body_timeout", "\"2h\""),
        ("limits", "min_body_rate", "\"2GiB\""),
        ("limits", "min_send_rate", "\"2GiB\""),
        ("limits", "max_requests_per_connection", "4294967296"),
        ("limits", "cgi_body_in_memory", "\"2GiB\""),
    ];
    for (table, key, value) in over {
        let text = format!("[{table}]\n{key} = {value}\n");
        let (code, _, stderr, _) = check(&text);
        assert_eq!(code, Some(78), "{text:?}: {stderr}");
        let col = key.len() + 4;
        assert!(
            stderr.starts_with(&format!("FILE:2:{col}: "))
                && (stderr.contains("at most") || stderr.contains("too")),
            "{text:?}: {stderr}"
        );
    }
    let backlog = "[[listen]]\naddress = \"127.0.0.1:1\"\nbacklog = 65536\n";
    assert!(
        check(backlog)
            .2
            .starts_with("FILE:3:11: must be at most 65535"),
        "{}",
        check(backlog).2
    );
    let cgi = "[[route]]\nprefix = \"/\"\ncgi = { dir = \"/x\", timeout = \"2h\" }\n";
    assert!(
        check(cgi).2.contains("is too long: at most 1h"),
        "{}",
        check(cgi).2
    );
    let many: String = (0..257)
        .map(|i| format!("[[listen]]\naddress = \"127.0.0.1:{}\"\n", 1000 + i))
        .collect();
    assert!(
        check(&many).2.contains("more than 256 [[listen]] entries"),
        "{}",
        check(&many).2
    );
}

#[test]
fn startup_refuses_a_bad_config_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[log]\ntarget = \"printer\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "{}:2:10: unknown log target \"printer\": expected auto, stderr or syslog",
            path.display()
        )
    );
}

#[test]
fn missing_file_and_usage_errors() {
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/lbaws.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/lbaws.toml: cannot read"));
    let out = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// `lbaws check | head -1`: the reader goes away after one line; the rest
/// of the output meets a closed pipe. lbaws ends quietly (0, or killed by
/// SIGPIPE), never with a panic (which aborts: 134).
#[test]
fn check_ends_quietly_when_its_reader_goes_away() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    // Enough lines that some are written after the reader is gone.
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!(
            "[[route]]\nprefix = \"/r{i}\"\ncgi = {{ dir = \"/usr/lib/cgi-bin\" }}\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
