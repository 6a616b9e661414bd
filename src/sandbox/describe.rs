//! What `lbaws check` prints of the sandbox and the CGI limits: each route's
//! workers' and scripts' rules, and each CGI route's limits.

use super::{cgroup, fs};
use crate::config::{Action, Config, SandboxMode};

/// For `lbaws check`: what each route's workers (and scripts) would get,
/// and each CGI route's limits.
pub fn describe(cfg: &Config) -> Vec<String> {
    let mut lines = match cfg.sandbox.mode {
        SandboxMode::Off => vec!["sandbox: off".into()],
        _ => describe_sandbox(cfg),
    };
    for route in &cfg.routes {
        if let Action::Cgi(c) = &route.action {
            let l = &c.limits;
            lines.push(format!(
                "limits: scripts of {}: processes {}, memory {}, cpu {}s, open_files {}, file_size {}; \
                 stderr: {} logged per request",
                route.prefix,
                l.processes,
                show_size(l.memory),
                l.cpu_secs,
                l.open_files,
                show_size(l.file_size),
                show_size(c.stderr)
            ));
        }
    }
    lines
}

fn describe_sandbox(cfg: &Config) -> Vec<String> {
    let show = |plan: &fs::Plan| {
        let mut s: Vec<String> = plan
            .paths
            .iter()
            .map(|(p, r)| format!("{} ({})", p.display(), r.word()))
            .collect();
        if plan.ports.is_empty() {
            s.push("no TCP connect".into());
        } else {
            let ports: Vec<String> = plan.ports.iter().map(u16::to_string).collect();
            s.push(format!("TCP connect to port {}", ports.join(", ")));
        }
        s.join(", ")
    };
    let cgroup = cgroup::detect().ok();
    let mut lines = vec![format!(
        "sandbox: every worker: {}",
        show(&fs::worker_plan(cfg, cgroup.as_deref()))
    )];
    for route in &cfg.routes {
        if let Action::Cgi(c) = &route.action {
            let w = &c.widen;
            let unix = match w.connect_unix.is_empty() {
                true => "no Unix sockets".to_string(),
                false => format!(
                    "Unix sockets, any path (asked: {}; the kernel has no rule for socket paths)",
                    w.connect_unix
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let udp = match w.udp_ports.is_empty() {
                true => "no UDP".to_string(),
                false => format!(
                    "UDP, any port (asked: {}; the kernel has no rule for UDP ports)",
                    w.udp_ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            lines.push(format!(
                "sandbox: scripts of {}: {}, {unix}, {udp}, no namespaces",
                route.prefix,
                show(&fs::script_plan(c))
            ));
        }
    }
    lines
}

/// "512MiB", "16KiB", "1000".
fn show_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}
