//! `lbaws status [--config FILE]`: the status page from the command line.
//! A plain HTTP client of the running server (which may be behind socket
//! activation): the configuration's first status route (a text one if
//! there is one), fetched from its first listener that takes plain HTTP,
//! else from its first (a wildcard address is asked on loopback), the body
//! printed as it comes. A listener with `proxy_protocol` is sent a PROXY
//! v2 `LOCAL` header first, as a balancer's own health check is.

use crate::config::{Action, Config, ListenAddr, StatusFormat};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The page's body, or a message saying why there is none.
pub fn fetch(cfg: &Config) -> Result<Vec<u8>, String> {
    let route = cfg
        .routes
        .iter()
        .filter(|r| matches!(r.action, Action::Status(_)))
        .min_by_key(|r| !matches!(r.action, Action::Status(StatusFormat::Text)))
        .ok_or_else(|| {
            format!(
                "{}: no route with a status action (e.g. [[route]] prefix = \"/server-status\" status = {{ format = \"text\" }})",
                cfg.source
            )
        })?;
    let listen = cfg.listen.iter().find(|l| l.proxy.is_none());
    let listen = listen.or(cfg.listen.first()).ok_or_else(|| {
        format!(
            "{}: no [[listen]] address to ask (socket-activated only?): fetch {} from the socket instead",
            cfg.source, route.prefix
        )
    })?;
    // The route's site by one of its names (the default site by any).
    let host = match cfg.sites.get(route.site) {
        Some(site) if route.site != cfg.default_site => site
            .names
            .iter()
            .map(|n| match n {
                crate::config::Pattern::Wildcard(suffix) => format!("status.{suffix}"),
                n => n.to_string(),
            })
            .next()
            .unwrap_or_else(|| "localhost".into()),
        _ => "localhost".into(),
    };
    let mut request = Vec::new();
    if listen.proxy.is_some() {
        request.extend_from_slice(&lbaws::proto::proxy::V2_LOCAL);
    }
    request.extend_from_slice(
        format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbaws-status\r\nConnection: close\r\n\r\n",
            route.prefix
        )
        .as_bytes(),
    );
    let where_ = listen.address.to_string();
    // Closed unanswered: a PROXY listener refuses what comes from outside
    // its proxy_from.
    let refused = |e: String| match &listen.proxy {
        Some(from) if !from.is_empty() => format!(
            "{e}: this listener takes connections only from its proxy_from, which does not \
             include this host's address; add it (e.g. \"127.0.0.1\", \"::1\"), or a plain \
             [[listen]] on loopback for lbaws status"
        ),
        _ => e,
    };
    let raw = match &listen.address {
        ListenAddr::Tcp(a) => {
            let ip = match a.ip() {
                IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            let s = std::net::TcpStream::connect_timeout(&SocketAddr::new(ip, a.port()), TIMEOUT)
                .map_err(|e| format!("cannot connect to {where_}: {e} (is lbaws running?)"))?;
            exchange(s, &request)
        }
        ListenAddr::Unix(p) => {
            let s = std::os::unix::net::UnixStream::connect(p)
                .map_err(|e| format!("cannot connect to {where_}: {e} (is lbaws running?)"))?;
            exchange(s, &request)
        }
    }
    .map_err(|e| refused(format!("{where_}: {e}")))?;
    if raw.is_empty() {
        return Err(refused(format!("{where_}: closed without an answer")));
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{where_}: no complete response"))?;
    let status_line = String::from_utf8_lossy(raw.split(|&b| b == b'\r').next().unwrap_or(b""));
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(raw[end + 4..].to_vec()),
        Some("403") => Err(format!(
            "{where_}{}: 403 Forbidden: the route's allow does not include this host's address",
            route.prefix
        )),
        _ => Err(format!("{where_}{}: {status_line}", route.prefix)),
    }
}

fn exchange<S: Read + Write + Timeouts>(mut s: S, request: &[u8]) -> std::io::Result<Vec<u8>> {
    s.timeouts(TIMEOUT)?;
    s.write_all(request)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(raw)
}

trait Timeouts {
    fn timeouts(&self, t: Duration) -> std::io::Result<()>;
}

impl Timeouts for std::net::TcpStream {
    fn timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Timeouts for std::os::unix::net::UnixStream {
    fn timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}
