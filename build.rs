//! Link-time layout: the functions a forked worker runs are placed together
//! at the start of the executable's code (`.cargo/worker-symbols.txt`, made by
//! `bench/order-symbols`). A worker faults in, and at exit unmaps, every
//! 64 KiB window of code it touches: gathered, its code spans two or three
//! windows instead of about seventeen, and each connection gets about a
//! quarter cheaper (bench/run, connection-per-request).
//!
//! Only where the linker is rust-lld (the default for x86_64-unknown-linux-gnu
//! since Rust 1.90). A name no longer in the executable is skipped quietly:
//! the list only ever degrades to the linker's own order.

use std::path::Path;

fn main() {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cargo/worker-symbols.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-linux-gnu" && list.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
