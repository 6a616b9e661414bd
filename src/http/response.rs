//! Writing responses: status line, the headers every response carries, body.

use nix::errno::Errno;
use nix::sys::socket::{send, MsgFlags};
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            2 => "OK",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// A complete response with `Connection: close`; `head_only` for HEAD.
pub fn build(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nDate: {}\r\nServer: lbaws\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        body.len()
    );
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// A small plain-text error response, e.g. "404 Not Found\n".
pub fn error(status: u16, head_only: bool) -> Vec<u8> {
    let body = format!("{status} {}\n", reason(status));
    build(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        head_only,
    )
}

/// Write all of `data` (blocking socket; no SIGPIPE).
pub fn send_all(fd: &OwnedFd, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match send(fd.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
