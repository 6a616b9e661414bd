//! Test builds only (`debug_assertions`; not in release builds): with
//! `LBAWS_SANDBOX_PROBE` set, a worker tries, right after it entered its
//! sandbox, what the sandbox must refuse it, and logs each result, so that
//! the tests prove the refusals from inside a real worker.
//!
//! The variable holds probes separated by spaces:
//! `open:PATH` (open a file for reading), `write:DIR` (create a file in a
//! directory), `connect:PORT` (TCP to 127.0.0.1), `exec:PATH` (execve),
//! `kill:PID` or `kill:parent` (signal 0), `fork`. Each logs `sandbox probe WHAT: allowed` or
//! `sandbox probe WHAT: refused (ERRNO)` at error level; `exec` under the
//! static filter ends the worker instead (the supervisor logs the call).

pub fn run() {
    let Ok(probes) = std::env::var("LBAWS_SANDBOX_PROBE") else {
        return;
    };
    for probe in probes.split_whitespace() {
        let (what, arg) = probe.split_once(':').unwrap_or((probe, ""));
        let result = match what {
            "open" => std::fs::File::open(arg).map(drop),
            "write" => std::fs::write(format!("{arg}/lbaws-probe"), b"x"),
            "connect" => {
                std::net::TcpStream::connect(("127.0.0.1", arg.parse().unwrap_or(1))).map(drop)
            }
            "exec" => {
                use std::os::unix::process::CommandExt;
                Err(std::process::Command::new(arg).exec())
            }
            "kill" => {
                let pid = match arg {
                    "parent" => nix::unistd::getppid(),
                    pid => nix::unistd::Pid::from_raw(pid.parse().unwrap_or(-1)),
                };
                nix::sys::signal::kill(pid, None).map_err(std::io::Error::from)
            }
            "fork" => {
                // SAFETY: the child only _exits.
                match crate::sys::fork() {
                    Ok(nix::unistd::ForkResult::Child) => crate::sys::exit_now(0),
                    Ok(nix::unistd::ForkResult::Parent { child }) => {
                        let _ = nix::sys::wait::waitpid(child, None);
                        Ok(())
                    }
                    Err(e) => Err(std::io::Error::from(e)),
                }
            }
            _ => continue,
        };
        match result {
            Ok(()) => crate::error!("sandbox probe {probe}: allowed"),
            Err(e) => crate::error!("sandbox probe {probe}: refused ({e})"),
        }
    }
}
