//! Responses: the status line and the headers every response carries (`Date`,
//! `Server`, framing, `Connection`), small plain error bodies, and the
//! `respond_*` helpers the worker answers with.

use super::conn::Conn;
use nix::errno::Errno;
use std::io::Write as _;

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
pub struct Head {
    buf: Vec<u8>,
    pub status: u16,
}

impl Head {
    pub fn new(status: u16, server_header: bool) -> Head {
        let mut buf = Vec::with_capacity(256);
        let _ = write!(
            buf,
            "HTTP/1.1 {status} {}\r\nDate: {}\r\n",
            reason(status),
            httpdate::fmt_http_date(std::time::SystemTime::now())
        );
        if server_header {
            buf.extend_from_slice(b"Server: lbaws\r\n");
        }
        Head { buf, status }
    }

    pub fn header(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Head {
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
    mut head: Head,
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

/// A small plain-text error response, e.g. "404 Not Found\n".
pub fn error(
    conn: &Conn<'_>,
    status: u16,
    server_header: bool,
    head_only: bool,
    persist: Persist,
) -> Result<Sent, Errno> {
    error_with(conn, Head::new(status, server_header), head_only, persist)
}

/// An error response with extra headers already on `head` (Allow, Content-Range).
pub fn error_with(
    conn: &Conn<'_>,
    head: Head,
    head_only: bool,
    persist: Persist,
) -> Result<Sent, Errno> {
    let status = head.status;
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
