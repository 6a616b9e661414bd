//! The status page (`status = { format = ... }`): what the scoreboard holds,
//! as a page for people (like Apache's mod_status), JSON for scripts, or the
//! Prometheus text exposition format (0.0.4). The worker that answers sees
//! only the scoreboard (shared memory), never the supervisor's own memory:
//! everything shown here is there (`crate::scoreboard`).

use super::conn::Conn;
use super::procfs::Process;
use super::request::Request;
use super::response::{self, Face, Head, Persist, Sent};
use crate::config::{Config, StatusFormat};
use crate::scoreboard::{self, SiteTotals, State, Sup, Totals, Worker, BUCKETS_US};
use nix::errno::Errno;
use std::fmt::Write as _;

pub const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answer a GET or HEAD with the page in `format`.
pub fn serve(
    conn: &Conn<'_>,
    req: &Request,
    cfg: &Config,
    sh: Face<'_>,
    format: StatusFormat,
    persist: Persist,
) -> Result<Sent, Errno> {
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        let mut h = Head::new(405, sh);
        h.header("Allow", "GET, HEAD");
        return response::error_with(conn, h, req.is_head(), persist);
    }
    let totals = scoreboard::totals();
    let workers = scoreboard::workers();
    let procs = super::procfs::processes();
    let sites = scoreboard::sites();
    let page = Page {
        totals: &totals,
        workers: &workers,
        sites: &sites,
        max_workers: cfg.server.max_connections,
        // As the supervisor sizes it, under its descriptor limit.
        max_pending: procs
            .iter()
            .find(|p| p.role == "supervisor")
            .and_then(|p| p.max_fds)
            .map(|nofile| cfg.max_pending(nofile).0),
        procs: &procs,
    };
    let (body, content_type) = match format {
        StatusFormat::Text => (page.text(), "text/plain; charset=utf-8"),
        StatusFormat::Json => (page.json(), "application/json"),
        StatusFormat::Prometheus => (page.prometheus(), PROMETHEUS_TYPE),
    };
    let mut h = Head::new(200, sh);
    // The configuration's Cache-Control replaces this one.
    if !sh.fields.has("cache-control") {
        h.header("Cache-Control", "no-store");
    }
    response::send(
        conn,
        h,
        content_type,
        body.as_bytes(),
        req.is_head(),
        persist,
    )
}

struct Page<'a> {
    totals: &'a Totals,
    workers: &'a [Worker],
    /// By site (`other` first).
    sites: &'a [SiteTotals],
    max_workers: usize,
    /// `[server] max_pending` (`None`: no supervisor, or its limit unread).
    max_pending: Option<usize>,
    /// The supervisor and the gate.
    procs: &'a [Process],
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const REFUSALS: [(Sup, &str); 5] = [
    (Sup::RefusedNoWorker, "no_worker"),
    (Sup::RefusedPerSource, "source_share"),
    (Sup::RefusedGateFull, "gate_full"),
    (Sup::RefusedQueueTimeout, "queue_timeout"),
    (Sup::RefusedProxy, "proxy"),
];
const EXITS: [(Sup, &str); 5] = [
    (Sup::ExitOk, "ok"),
    (Sup::ExitError, "error"),
    (Sup::ExitSignal, "signal"),
    (Sup::ExitSandbox, "sandbox"),
    (Sup::ExitStalled, "stalled"),
];

impl Page<'_> {
    /// Live workers by state, every state named.
    fn states(&self) -> [(&'static str, u64); State::ALL.len()] {
        State::ALL.map(|st| {
            let n = self.workers.iter().filter(|w| w.state == st).count();
            (st.name(), n as u64)
        })
    }

    /// Connections in the gate (or on their way to it): every kind.
    fn in_gate(&self) -> u64 {
        self.totals.get(Sup::Waiting) + self.totals.get(Sup::Parked)
    }

    /// Open client connections: each worker's, and the gate's.
    fn active(&self) -> u64 {
        self.workers.len() as u64 + self.in_gate()
    }

    fn uptime(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        now.saturating_sub(self.totals.get(Sup::StartedUnix))
    }

    fn text(&self) -> String {
        let t = self.totals;
        let mut s = String::with_capacity(1024 + 160 * self.workers.len());
        let _ = writeln!(s, "lbaws {} status", crate::VERSION);
        let _ = writeln!(s, "uptime: {}s", self.uptime());
        let _ = write!(
            s,
            "workers: {} of {} (",
            self.workers.len(),
            self.max_workers
        );
        text_counts(&mut s, self.states());
        s.push_str(")\n");
        let _ = writeln!(
            s,
            "connections: {} active ({} in workers, {} in the gate); {} accepted; {} evicted; {} turns",
            self.active(),
            self.workers.len(),
            self.in_gate(),
            t.get(Sup::Accepted),
            t.get(Sup::Evicted),
            t.get(Sup::Turns)
        );
        let _ = write!(s, "gate: {} connections", self.in_gate());
        if let Some(max) = self.max_pending {
            let _ = write!(s, " of {max}");
        }
        let _ = writeln!(
            s,
            " ({} queued for a worker, {} parked)",
            t.get(Sup::Queued),
            t.get(Sup::Parked)
        );
        let _ = writeln!(
            s,
            "refused: {} no worker, {} over their source's share, {} gate full, {} queue timeout, {} PROXY header",
            t.get(Sup::RefusedNoWorker),
            t.get(Sup::RefusedPerSource),
            t.get(Sup::RefusedGateFull),
            t.get(Sup::RefusedQueueTimeout),
            t.get(Sup::RefusedProxy)
        );
        let total: u64 = t.requests.iter().sum();
        let _ = write!(s, "responses: {total} (");
        for (i, (class, n)) in CLASSES.iter().zip(t.requests).enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            let _ = write!(s, "{sep}{class} {n}");
        }
        let _ = writeln!(
            s,
            "), {} body bytes sent; {} request bytes received",
            t.bytes_sent, t.bytes_received
        );
        if total > 0 {
            let _ = writeln!(
                s,
                "mean request duration: {:.3} ms",
                t.duration_us as f64 / total as f64 / 1000.0
            );
        }
        for site in self.sites {
            let _ = write!(s, "  site {}: ", site.label);
            text_counts(&mut s, CLASSES.iter().copied().zip(site.requests));
            let _ = writeln!(s, "; {} body bytes", site.bytes_sent);
        }
        s.push_str("worker exits: ");
        text_counts(&mut s, EXITS.map(|(what, name)| (name, t.get(what))));
        let _ = writeln!(
            s,
            "\nreloads: {} ({} failed); upgrades in place: {}",
            t.get(Sup::Reloads),
            t.get(Sup::ReloadsFailed),
            t.get(Sup::Upgrades)
        );
        let _ = writeln!(s, "access log: {} line(s) lost", t.lines_lost);
        for p in self.procs {
            let _ = write!(
                s,
                "{} (pid {}): cpu {:.2}s, {:.1} MiB resident, ",
                p.role,
                p.pid,
                p.cpu_seconds,
                p.resident_bytes as f64 / (1 << 20) as f64
            );
            let _ = match (p.open_fds, p.max_fds) {
                (Some(n), Some(max)) => writeln!(s, "{n} of {max} descriptors open"),
                (Some(n), None) => writeln!(s, "{n} descriptors open"),
                (None, _) => writeln!(s, "descriptors unknown"),
            };
        }
        s.push_str("\nscoreboard: ");
        for w in self.workers {
            s.push(w.state.letter());
        }
        s.push_str("\n  (S starting, R reading a head, B reading a body, W writing, C CGI, K keep-alive, G closing)\n\n");
        let _ = writeln!(
            s,
            "{:>5} {:>8} {:<9} {:<40} {:>5} {:>10} {:>10} {:>9} {:>9}  {:<20} request",
            "slot", "pid", "state", "peer", "reqs", "in", "out", "age", "idle", "site"
        );
        for w in self.workers {
            let _ = writeln!(
                s,
                "{:>5} {:>8} {:<9} {:<40} {:>5} {:>10} {:>10} {:>8.1}s {:>8.1}s  {:<20} {}",
                w.slot,
                w.pid,
                w.state.name(),
                peer(w),
                w.requests,
                w.bytes_in,
                w.bytes_out,
                w.age_ms as f64 / 1000.0,
                w.idle_ms as f64 / 1000.0,
                w.site,
                printable(&w.line)
            );
        }
        s
    }

    fn json(&self) -> String {
        let t = self.totals;
        let mut s = String::with_capacity(1024 + 256 * self.workers.len());
        let _ = write!(
            s,
            "{{\"version\":\"{}\",\"uptime_seconds\":{},\"max_workers\":{},\"workers_by_state\":{{",
            crate::VERSION,
            self.uptime(),
            self.max_workers
        );
        json_counts(&mut s, self.states());
        let _ = write!(
            s,
            "}},\"gate\":{{\"connections\":{},\"connections_max\":{},\"connections_queued\":{},\"connections_parked\":{}}}",
            self.in_gate(),
            self.max_pending.map_or("null".into(), |n| n.to_string()),
            t.get(Sup::Queued),
            t.get(Sup::Parked)
        );
        let _ = write!(
            s,
            ",\"connections\":{{\"active\":{},\"accepted\":{},\"parks\":{},\"turns\":{},\"evicted\":{},\"refused\":{{",
            self.active(),
            t.get(Sup::Accepted),
            t.get(Sup::Parks),
            t.get(Sup::Turns),
            t.get(Sup::Evicted)
        );
        json_counts(&mut s, REFUSALS.map(|(what, name)| (name, t.get(what))));
        s.push_str("}},\"responses\":{");
        json_counts(&mut s, CLASSES.into_iter().zip(t.requests));
        let _ = write!(
            s,
            "}},\"body_bytes_sent\":{},\"received_bytes\":{},\"access_log_lines_lost\":{},\"request_duration_seconds_sum\":{},\"worker_exits\":{{",
            t.bytes_sent,
            t.bytes_received,
            t.lines_lost,
            t.duration_us as f64 / 1e6
        );
        json_counts(&mut s, EXITS.map(|(what, name)| (name, t.get(what))));
        s.push_str("},\"sites\":[");
        for (i, site) in self.sites.iter().enumerate() {
            s.push_str(if i > 0 {
                ",{\"site\":\""
            } else {
                "{\"site\":\""
            });
            json_escape(&mut s, site.label.as_bytes());
            s.push_str("\",\"requests\":{");
            json_counts(&mut s, CLASSES.into_iter().zip(site.requests));
            let _ = write!(s, "}},\"body_bytes_sent\":{}}}", site.bytes_sent);
        }
        let _ = write!(
            s,
            "],\"reloads\":{},\"reloads_failed\":{},\"upgrades\":{},\"processes\":[",
            t.get(Sup::Reloads),
            t.get(Sup::ReloadsFailed),
            t.get(Sup::Upgrades)
        );
        for (i, p) in self.procs.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let opt = |v: Option<u64>| v.map_or("null".into(), |n| n.to_string());
            let _ = write!(
                s,
                "{sep}{{\"process\":\"{}\",\"pid\":{},\"cpu_seconds\":{},\"resident_memory_bytes\":{},\"open_fds\":{},\"max_fds\":{},\"start_time_seconds\":{}}}",
                p.role,
                p.pid,
                p.cpu_seconds,
                p.resident_bytes,
                opt(p.open_fds),
                opt(p.max_fds),
                p.start_seconds
            );
        }
        s.push_str("],\"workers\":[");
        for (i, w) in self.workers.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(
                s,
                "{sep}{{\"slot\":{},\"pid\":{},\"state\":\"{}\",\"peer\":\"{}\",\"requests\":{},\"bytes_in\":{},\"bytes_out\":{},\"age_ms\":{},\"idle_ms\":{},\"request_ms\":{},\"request\":\"",
                w.slot,
                w.pid,
                w.state.name(),
                peer(w),
                w.requests,
                w.bytes_in,
                w.bytes_out,
                w.age_ms,
                w.idle_ms,
                w.request_us / 1000
            );
            json_escape(&mut s, &w.line);
            s.push_str("\",\"site\":\"");
            json_escape(&mut s, w.site.as_bytes());
            s.push_str("\"}");
        }
        s.push_str("]}\n");
        s
    }

    fn prometheus(&self) -> String {
        let t = self.totals;
        let mut s = String::with_capacity(4096);
        let lbl = |key: &str, val: &str| format!("{{{key}=\"{val}\"}}");
        let one = |v: u64| [(String::new(), v)];
        family(
            &mut s,
            "lbaws_build_info",
            "gauge",
            "The running lbaws.",
            [(lbl("version", crate::VERSION), 1)],
        );
        family(
            &mut s,
            "lbaws_start_time_seconds",
            "gauge",
            "When lbaws started (an upgrade in place keeps it), seconds since the epoch.",
            one(t.get(Sup::StartedUnix)),
        );
        let states = self.states().map(|(name, n)| (lbl("state", name), n));
        family(
            &mut s,
            "lbaws_workers",
            "gauge",
            "Workers by state.",
            states,
        );
        family(
            &mut s,
            "lbaws_workers_max",
            "gauge",
            "The most workers at once ([server] max_connections).",
            one(self.max_workers as u64),
        );
        family(
            &mut s,
            "lbaws_connections_active",
            "gauge",
            "Open client connections: each worker's, and those in the gate (nginx's active connections).",
            one(self.active()),
        );
        family(
            &mut s,
            "lbaws_gate_connections",
            "gauge",
            "Connections in the gate: a request head or body on its way, a request waiting for a worker, parked, or closing.",
            one(self.in_gate()),
        );
        family(
            &mut s,
            "lbaws_gate_connections_max",
            "gauge",
            "Room in the gate ([server] max_pending).",
            self.max_pending.map(|n| (String::new(), n as u64)),
        );
        family(
            &mut s,
            "lbaws_gate_connections_queued",
            "gauge",
            "Connections in the gate whose complete request waits for a worker.",
            one(t.get(Sup::Queued)),
        );
        family(
            &mut s,
            "lbaws_gate_connections_parked",
            "gauge",
            "Connections in the gate that a worker handed back idle between requests (keep-alive).",
            one(t.get(Sup::Parked)),
        );
        family(
            &mut s,
            "lbaws_connections_accepted_total",
            "counter",
            "Connections accepted.",
            one(t.get(Sup::Accepted)),
        );
        family(
            &mut s,
            "lbaws_connections_refused_total",
            "counter",
            "Connections refused, by reason.",
            REFUSALS.map(|(what, name)| (lbl("reason", name), t.get(what))),
        );
        family(
            &mut s,
            "lbaws_parks_total",
            "counter",
            "Idle connections workers handed back to the gate.",
            one(t.get(Sup::Parks)),
        );
        family(
            &mut s,
            "lbaws_turns_total",
            "counter",
            "Keep-alive connections handed back right after a response because requests waited for a worker.",
            one(t.get(Sup::Turns)),
        );
        family(
            &mut s,
            "lbaws_evictions_total",
            "counter",
            "Connections the gate closed to make room at max_pending (idle, or half a head).",
            one(t.get(Sup::Evicted)),
        );
        let classes = self.sites.iter().flat_map(|site| {
            let l = prom_label(&site.label);
            CLASSES
                .iter()
                .zip(site.requests)
                .map(move |(c, n)| (format!("{{site=\"{l}\",code=\"{c}\"}}"), n))
        });
        family(
            &mut s,
            "lbaws_http_responses_total",
            "counter",
            "Responses, by site (other: before one was known) and status class.",
            classes,
        );
        family(
            &mut s,
            "lbaws_response_body_bytes_total",
            "counter",
            "Response body bytes sent.",
            one(t.bytes_sent),
        );
        family(
            &mut s,
            "lbaws_received_bytes_total",
            "counter",
            "Request bytes received from clients (heads and bodies).",
            one(t.bytes_received),
        );
        family(
            &mut s,
            "lbaws_access_log_lines_lost_total",
            "counter",
            "Access-log lines not written (whole), e.g. on a full disk.",
            one(t.lines_lost),
        );
        family(
            &mut s,
            "lbaws_worker_exits_total",
            "counter",
            "Workers ended, by cause.",
            EXITS.map(|(what, name)| (lbl("cause", name), t.get(what))),
        );
        family(
            &mut s,
            "lbaws_reloads_total",
            "counter",
            "Configuration reloads, by result.",
            [
                (lbl("result", "ok"), t.get(Sup::Reloads)),
                (lbl("result", "failed"), t.get(Sup::ReloadsFailed)),
            ],
        );
        family(
            &mut s,
            "lbaws_upgrades_total",
            "counter",
            "Upgrades in place.",
            one(t.get(Sup::Upgrades)),
        );
        family(
            &mut s,
            "lbaws_request_duration_seconds",
            "histogram",
            "From a request's first byte to the end of its response, by site.",
            [] as [(String, u64); 0],
        );
        for site in self.sites {
            let l = prom_label(&site.label);
            let mut cumulative = 0;
            for (i, n) in site.buckets.iter().enumerate() {
                cumulative += n;
                let le = match BUCKETS_US.get(i) {
                    Some(us) => format!("{}", *us as f64 / 1e6),
                    None => "+Inf".to_string(),
                };
                let _ = writeln!(
                    s,
                    "lbaws_request_duration_seconds_bucket{{site=\"{l}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                s,
                "lbaws_request_duration_seconds_sum{{site=\"{l}\"}} {}\nlbaws_request_duration_seconds_count{{site=\"{l}\"}} {cumulative}",
                site.duration_us as f64 / 1e6
            );
        }
        self.process_metrics(&mut s);
        s
    }

    /// The standard `process_*` metrics, for the supervisor and the gate
    /// (label `process`).
    fn process_metrics(&self, s: &mut String) {
        let of = |v: fn(&Process) -> Option<f64>| {
            self.procs
                .iter()
                .filter_map(move |p| Some((format!("{{process=\"{}\"}}", p.role), v(p)?)))
        };
        family(
            s,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time, seconds.",
            of(|p| Some(p.cpu_seconds)),
        );
        family(
            s,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, bytes.",
            of(|p| Some(p.resident_bytes as f64)),
        );
        family(
            s,
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            of(|p| p.open_fds.map(|n| n as f64)),
        );
        family(
            s,
            "process_max_fds",
            "gauge",
            "The limit on open file descriptors (soft).",
            of(|p| p.max_fds.map(|n| n as f64)),
        );
        family(
            s,
            "process_start_time_seconds",
            "gauge",
            "When the process started, seconds since the epoch.",
            of(|p| Some(p.start_seconds)),
        );
    }
}

/// A label value as the exposition format writes it (`\`, `"` and line
/// feeds escaped).
fn prom_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family in the text exposition format: its HELP and TYPE
/// lines, then a sample per (labels, value).
fn family<V: std::fmt::Display>(
    s: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, V)>,
) {
    let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    for (labels, v) in samples {
        let _ = writeln!(s, "{name}{labels} {v}");
    }
}

/// `"name":n` pairs, comma-separated: the inside of a JSON object.
fn json_counts<'a>(s: &mut String, pairs: impl IntoIterator<Item = (&'a str, u64)>) {
    for (i, (name, n)) in pairs.into_iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(s, "{sep}\"{name}\":{n}");
    }
}

/// `n name` pairs, comma-separated, for people.
fn text_counts<'a>(s: &mut String, pairs: impl IntoIterator<Item = (&'a str, u64)>) {
    for (i, (name, n)) in pairs.into_iter().enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        let _ = write!(s, "{sep}{n} {name}");
    }
}

fn peer(w: &Worker) -> String {
    match w.peer {
        Some((ip @ std::net::IpAddr::V6(_), port)) => format!("[{ip}]:{port}"),
        Some((ip, port)) => format!("{ip}:{port}"),
        None => "unix".to_string(),
    }
}

/// The request line as text: bytes outside printable ASCII as `\xNN`.
fn printable(line: &[u8]) -> String {
    let mut s = String::with_capacity(line.len());
    for &b in line {
        match b {
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

/// The request line as the text page shows it ([`printable`]), as a JSON
/// string's contents.
fn json_escape(out: &mut String, bytes: &[u8]) {
    for c in printable(bytes).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
}
