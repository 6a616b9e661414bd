//! Responses: the status line and the headers every response carries (`Date`,
//! `Server`, framing, `Connection`), small plain error bodies, and the
//! `respond_*` helpers the worker answers with.

use super::conn::Conn;
use super::static_file::RootCache;
use crate::config::{Config, Fields, Site};
use nix::errno::Errno;
use std::io::Write as _;

/// What every response to a request carries besides its own fields: the
/// `Server` field, the fields its site and route add (`headers`), and the
/// site's error pages.
#[derive(Clone, Copy)]
pub struct Face<'c> {
    /// Send `Server: lbaws` (unless the configuration's fields replace it).
    pub server: bool,
    pub fields: &'c Fields,
    pub pages: Option<Pages<'c>>,
}

/// A site's error pages, and what serving one needs.
#[derive(Clone, Copy)]
pub struct Pages<'c> {
    pub cfg: &'c Config,
    pub site: &'c Site,
    pub roots: &'c RootCache,
}

static NO_FIELDS: Fields = Fields {
    block: String::new(),
    list: Vec::new(),
};

impl<'c> Face<'c> {
    /// No site known (a request refused before it was routed).
    pub fn plain(server_header: bool) -> Face<'static> {
        Face {
            server: server_header,
            fields: &NO_FIELDS,
            pages: None,
        }
    }

    /// For responses of `site` (and `fields`, its route's or its own).
    pub fn of(
        cfg: &'c Config,
        site: &'c Site,
        fields: &'c Fields,
        roots: &'c RootCache,
    ) -> Face<'c> {
        Face {
            server: cfg.server.server_header && !fields.has("server"),
            fields,
            pages: (!site.errors.is_empty()).then_some(Pages { cfg, site, roots }),
        }
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            1 => "Informational",
            2 => "OK",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// How the connection continues after this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// Keep it open; for an HTTP/1.0 client say so (`Connection: keep-alive`).
    KeepAlive {
        http10: bool,
    },
    Close,
}

/// What a response put on the wire, for the access log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    pub status: u16,
    pub body_bytes: u64,
}

/// A response head being built.
pub struct Head<'c> {
    buf: Vec<u8>,
    pub status: u16,
    pub face: Face<'c>,
}

impl<'c> Head<'c> {
    pub fn new(status: u16, face: Face<'c>) -> Head<'c> {
        let mut buf = Vec::with_capacity(256 + face.fields.block.len());
        let _ = write!(
            buf,
            "HTTP/1.1 {status} {}\r\nDate: {}\r\n",
            reason(status),
            httpdate::fmt_http_date(std::time::SystemTime::now())
        );
        if face.server {
            buf.extend_from_slice(b"Server: lbaws\r\n");
        }
        buf.extend_from_slice(face.fields.block.as_bytes());
        Head { buf, status, face }
    }

    pub fn header(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Head<'c> {
        let _ = write!(self.buf, "{name}: {value}\r\n");
        self
    }

    /// End the head: framing and connection headers.
    pub fn finish(mut self, content_length: Option<u64>, persist: Persist) -> Vec<u8> {
        if let Some(n) = content_length {
            let _ = write!(self.buf, "Content-Length: {n}\r\n");
        }
        match persist {
            Persist::Close => self.buf.extend_from_slice(b"Connection: close\r\n"),
            Persist::KeepAlive { http10: true } => {
                self.buf.extend_from_slice(b"Connection: keep-alive\r\n")
            }
            Persist::KeepAlive { http10: false } => {}
        }
        self.buf.extend_from_slice(b"\r\n");
        self.buf
    }
}

/// Send a complete response whose body is in memory.
pub fn send(
    conn: &Conn<'_>,
    mut head: Head<'_>,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    persist: Persist,
) -> Result<Sent, Errno> {
    let status = head.status;
    // 1xx, 204 and 304 have no body and no Content-Type.
    let bodyless = status == 204 || status == 304 || status < 200;
    if !bodyless {
        head.header("Content-Type", content_type);
    }
    let mut out = head.finish((!bodyless).then_some(body.len() as u64), persist);
    conn.mark_head(status, out.len());
    let send_body = !head_only && !bodyless;
    if send_body {
        out.extend_from_slice(body);
    }
    conn.write_all(&out, false)?;
    Ok(Sent {
        status,
        body_bytes: if send_body { body.len() as u64 } else { 0 },
    })
}

/// A small plain-text error response, e.g. "404 Not Found\n" (or the
/// site's page for the status).
pub fn error(
    conn: &Conn<'_>,
    status: u16,
    face: Face<'_>,
    head_only: bool,
    persist: Persist,
) -> Result<Sent, Errno> {
    error_with(conn, Head::new(status, face), head_only, persist)
}

/// An error response with extra headers already on `head` (Allow,
/// Content-Range): the site's page for the status if it has one that can
/// be opened, else a small plain body.
pub fn error_with(
    conn: &Conn<'_>,
    head: Head<'_>,
    head_only: bool,
    persist: Persist,
) -> Result<Sent, Errno> {
    let status = head.status;
    if let Some(pages) = head.face.pages {
        if let Some(page) = super::error_page::open(pages, status) {
            return super::error_page::send(conn, head, page, head_only, persist);
        }
    }
    let body = format!("{status} {}\n", reason(status));
    send(
        conn,
        head,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        head_only,
        persist,
    )
}
