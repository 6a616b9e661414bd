//! Link-time layout: the functions a forked worker runs are placed together
//! at the start of the executable's code (`.cargo/worker-symbols.txt`, made by
//! `bench/order-symbols`). A worker faults in, and at exit unmaps, every
//! 64 KiB window of code it touches: gathered, its code spans two or three
//! windows instead of about seventeen, and each connection gets about a
//! quarter cheaper (bench/run, connection-per-request).
//!
//! Only where the linker takes `--symbol-ordering-file`: rust-lld does (the
//! default for x86_64-unknown-linux-gnu since Rust 1.90), GNU ld does not. A
//! probe links an empty program with this build's rustc, target, flags and
//! linker first; if that fails, the build says so (a cargo warning) and links
//! in the linker's own order: a correct lbaws, with costlier workers. A name
//! no longer in the executable is skipped quietly: the list only ever degrades
//! to the linker's own order (`tests/package-checks.sh` checks it is current).
//!
//! Also the version lbaws reports (`--version`): `LBAWS_VERSION` is the
//! package's version with `LBAWS_VERSION_SUFFIX` appended, so that a version
//! N+1 can be built from the same tree for upgrade tests, e.g.
//! `LBAWS_VERSION_SUFFIX=+next packaging/build-deb --deb-version V+next-1`
//! (V the version in Cargo.toml) makes lbaws V+next, which sorts after V, in
//! lbaws_V+next-1_amd64.deb (tests/e2e-systemd.sh does).

use std::path::Path;
use std::process::Command;

fn main() {
    version();
    symbol_ordering();
}

fn version() {
    println!("cargo:rerun-if-env-changed=LBAWS_VERSION_SUFFIX");
    let suffix = std::env::var("LBAWS_VERSION_SUFFIX").unwrap_or_default();
    // It ends up in a Debian version too (packaging/build-deb): "+" sorts
    // after the plain version, "~" before it; nothing that would need quoting.
    let valid = suffix.is_empty()
        || (suffix.starts_with(['+', '~'])
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+~.".contains(&b)));
    if !valid {
        panic!("LBAWS_VERSION_SUFFIX={suffix:?}: must start with + or ~, then letters, digits, '.', '+' or '~'");
    }
    let version = env("CARGO_PKG_VERSION") + &suffix;
    println!("cargo:rustc-env=LBAWS_VERSION={version}");
}

fn symbol_ordering() {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cargo/worker-symbols.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    if !list.exists() {
        return;
    }
    let args = [
        format!("-Wl,--symbol-ordering-file={}", list.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    match linker_accepts(&args) {
        Ok(()) => {
            for a in &args {
                println!("cargo:rustc-link-arg-bins={a}");
            }
        }
        Err(why) => println!(
            "cargo:warning=worker code layout not applied: the linker does not take \
             --symbol-ordering-file (rust-lld does): {why}"
        ),
    }
}

/// Links an empty program the way the binary will be linked (same rustc,
/// target, flags and linker) with `link_args` added.
fn linker_accepts(link_args: &[String]) -> Result<(), String> {
    let out = std::path::PathBuf::from(env("OUT_DIR"));
    let src = out.join("symbol-ordering-probe.rs");
    std::fs::write(&src, "fn main() {}\n").map_err(|e| format!("{}: {e}", src.display()))?;
    let mut cmd = Command::new(env("RUSTC"));
    cmd.args([
        "--crate-name",
        "probe",
        "--crate-type",
        "bin",
        "--edition",
        "2021",
    ])
    .args(["--target", &env("TARGET")])
    .arg("-o")
    .arg(out.join("symbol-ordering-probe"))
    .arg(&src);
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        cmd.arg(format!("-Clinker={linker}"));
    }
    for a in link_args {
        cmd.arg(format!("-Clink-arg={a}"));
    }
    let result = cmd.output().map_err(|e| format!("running rustc: {e}"))?;
    let _ = std::fs::remove_file(out.join("symbol-ordering-probe"));
    if result.status.success() {
        return Ok(());
    }
    // The linker's complaint, in one line.
    let stderr = String::from_utf8_lossy(&result.stderr);
    // (The line that quotes the whole linker command is not the complaint.)
    let line = stderr
        .lines()
        .filter(|l| !l.contains("\" \""))
        .find(|l| {
            ["unrecognized", "unknown", "symbol-ordering"]
                .iter()
                .any(|w| l.contains(w))
        })
        .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("the probe failed");
    Err(line.trim().trim_start_matches("= note:").trim().to_string())
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo did not set {name}"))
}
