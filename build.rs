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
//! in the linker's own order: a correct lbaws, with costlier workers.
//!
//! The list holds mangled names, and their hashes change with the rustc, with
//! lbaws's version and dependencies and with the profile: a list made for
//! another build matches few of the executable's names and the layout quietly
//! falls back to the linker's order. So the list says what it was made for
//! (its `# for:` line: the rustc, lbaws's version, a hash of Cargo.lock), it
//! is applied to release builds only (the names are those of a release
//! build), and a release build made with anything else warns loudly (a cargo
//! warning) that few names will match, until `bench/order-symbols` makes the
//! list again. The linker is told not to warn name by name: this check says
//! it once. `bench/run` prints how many names the executable it measures
//! has, and `tests/package-checks.sh` fails the package under 90%.
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = root.join(".cargo/worker-symbols.txt");
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-changed={}", lock.display());
    let Ok(text) = std::fs::read_to_string(&list) else {
        return;
    };
    if env("PROFILE") != "release" {
        return;
    }
    let made_for = text
        .lines()
        .find_map(|l| l.strip_prefix("# for: "))
        .unwrap_or("(no \"# for:\" line)");
    let this_build = build_identity(&lock);
    if made_for != this_build {
        println!(
            "cargo:warning=worker code layout: .cargo/worker-symbols.txt was made for \
             {made_for}; this build is {this_build}: few of its names will match, and \
             each connection costs about a quarter more. Run bench/order-symbols and \
             commit the list."
        );
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

/// What the list's names depend on, as its `# for:` line says it (and as
/// `bench/order-symbols` writes it): "rustc 1.95.0 (59807616e 2026-04-14),
/// lbaws 0.3.0, Cargo.lock fnv1a64 0123456789abcdef".
fn build_identity(lock: &Path) -> String {
    let rustc = Command::new(env("RUSTC"))
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "rustc (unknown)".to_string(), |v| v.trim().to_string());
    let lock = std::fs::read(lock).unwrap_or_default();
    format!(
        "{rustc}, lbaws {}, Cargo.lock fnv1a64 {:016x}",
        env("CARGO_PKG_VERSION"),
        fnv1a64(&lock)
    )
}

/// FNV-1a, 64 bits: a fingerprint of Cargo.lock that bench/order-symbols
/// computes the same way.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo did not set {name}"))
}
