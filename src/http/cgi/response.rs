//! The answer to a CGI request: the script's header read (within the
//! route's `timeout`) and parsed ([`lbaws::proto::cgi_head`]), the response
//! head built from it, and the body streamed to the client as the script
//! writes it.
//!
//! Framing is the server's: the script's `Content-Length` when it gave one,
//! else chunked on a keep-alive HTTP/1.1 connection, else close-delimited
//! (and the connection closes). A response that has no body sends the head
//! only, and the script's body, if it writes one, is read and dropped, so
//! that the connection stays in step: HEAD (with the script's
//! `Content-Length`, what a GET would have had), and 204 and 304, which
//! carry no framing at all (no `Content-Length`, no `Transfer-Encoding`,
//! whatever the script sent: RFC 9110 8.6 and 15.3.5, RFC 9112 6.3), so that
//! no client can take bytes of the next response for a body of this one.
//!
//! Failures: the script ends before a complete header, or writes one the
//! parser refuses: 502; no complete header within `timeout`: SIGTERM to its
//! group, SIGKILL 2 s later, 504. Each is logged with the script and its pid.
//! Among the refusals is an interim status (`Status: 1xx`): sent on as the
//! answer, it would leave the client waiting for the final response, and a
//! request pipelined after it unanswered; it is a 502 like any other header
//! the server cannot send.

use super::process::Running;
use super::Outcome;
use crate::config::{CgiRoute, Config};
use crate::http::conn::Conn;
use crate::http::request::Request;
use crate::http::response::{self, Face, Head, Persist, Sent};
use lbaws::proto::cgi_head::{self, CgiHead};
use nix::errno::Errno;
use std::io::Write as _;
use std::time::Instant;

/// How the body goes out.
enum Framing {
    /// No body on the wire (HEAD, 204, 304): the script's is dropped.
    /// `Some(n)`: a HEAD's `Content-Length`, as the script gave it.
    Nothing(Option<u64>),
    Length(u64),
    Chunked,
    Close,
}

/// The framing of the answer to `req` with `status` and the script's head.
fn framing(head: &CgiHead, status: u16, req: &Request, persist: Persist) -> Framing {
    if status == 204 || status == 304 {
        return Framing::Nothing(None);
    }
    if req.is_head() {
        return Framing::Nothing(head.content_length);
    }
    match (head.content_length, persist) {
        (Some(n), _) => Framing::Length(n),
        (None, Persist::KeepAlive { http10: false }) => Framing::Chunked,
        _ => Framing::Close,
    }
}

/// Read the header, answer, stream the body.
pub fn respond(
    conn: &Conn<'_>,
    run: &mut Running,
    req: &Request,
    route: &CgiRoute,
    cfg: &Config,
    sh: Face<'_>,
    persist: Persist,
) -> Result<Outcome, Errno> {
    let deadline = Instant::now() + route.timeout;
    let (head, leftover) = match read_head(run, route, deadline) {
        Ok(h) => h,
        Err(status) => return bad_gateway(conn, req, sh, persist, status),
    };

    // Local redirect: the server fetches that path instead (RFC 3875 6.2.2).
    if let (Some(loc), None) = (&head.location, head.status) {
        if loc.starts_with('/') {
            drain(run, deadline);
            return Ok(Outcome::Redirect(loc.clone()));
        }
    }
    let status = head
        .status
        .unwrap_or(if head.location.is_some() { 302 } else { 200 });
    let bodyless_status = status == 204 || status == 304;
    if head.content_type.is_none()
        && head.location.is_none()
        && !bodyless_status
        && head.status.is_none()
    {
        crate::error!(
            "cgi {}[{}]: response header without Content-Type, Location or Status",
            run.name,
            run.pid
        );
        run.terminate();
        return bad_gateway(conn, req, sh, persist, 502);
    }

    let framing = framing(&head, status, req, persist);
    let head_bytes = response_head(&head, status, sh, &framing, persist);
    let body_follows = !matches!(framing, Framing::Nothing(_));
    if let Framing::Close = framing {
        // Until the body is known complete, a close resets the connection
        // (SO_LINGER 0): then a worker killed meanwhile, or a script killed
        // mid-body, cannot make a cut body look like the whole of one.
        let _ = crate::sys::set_reset_on_close(conn.fd(), true);
    }
    conn.mark_head(status, head_bytes.len());
    conn.write_all(&head_bytes, body_follows)?;
    let (sent, broken) = stream_body(conn, run, route, cfg, &framing, leftover)?;
    if let (Framing::Close, false) = (&framing, conn.is_cut()) {
        let _ = crate::sys::set_reset_on_close(conn.fd(), false);
    }
    Ok(Outcome::Sent {
        sent: Sent {
            status,
            body_bytes: sent,
        },
        close: broken || matches!(framing, Framing::Close),
    })
}

/// Read until the header is complete: the parsed head and the body bytes
/// that came with it, or the status to answer with (logged, the script
/// ended).
fn read_head(
    run: &mut Running,
    route: &CgiRoute,
    deadline: Instant,
) -> Result<(CgiHead, Vec<u8>), u16> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    loop {
        let n = match run.read(&mut chunk, deadline) {
            Ok(0) => {
                // Its output is closed: no header can come. It has ended
                // (502), or it will by the deadline, or it is ended then
                // (504): the timeout holds whatever it does with its
                // descriptors.
                if run.wait_exit(deadline) {
                    crate::error!(
                        "cgi {}[{}]: {} before a complete response header",
                        run.name,
                        run.pid,
                        run.end()
                    );
                    return Err(502);
                }
                crate::error!(
                    "cgi {}[{}]: closed its output before a complete response header \
                     and is still running after {:?}; terminating it",
                    run.name,
                    run.pid,
                    route.timeout
                );
                run.terminate();
                return Err(504);
            }
            Ok(n) => n,
            Err(()) => {
                crate::error!(
                    "cgi {}[{}]: no response header within {:?}; terminating it",
                    run.name,
                    run.pid,
                    route.timeout
                );
                run.terminate();
                return Err(504);
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        // Parse again only once a line has ended (or the limit is reached):
        // a script writing a byte at a time costs no more than one that
        // writes its header at once.
        if !chunk[..n].contains(&b'\n') && buf.len() < cgi_head::MAX_HEAD {
            continue;
        }
        match cgi_head::parse(&buf) {
            Ok(Some((head, body_start))) => return Ok((head, buf.split_off(body_start))),
            Ok(None) => {}
            Err(why) => {
                crate::error!("cgi {}[{}]: {why}", run.name, run.pid);
                run.terminate();
                return Err(502);
            }
        }
    }
}

/// The response head: the status, the script's fields, the framing.
fn response_head(
    head: &CgiHead,
    status: u16,
    face: Face<'_>,
    framing: &Framing,
    persist: Persist,
) -> Vec<u8> {
    let mut h = Head::new(status, face);
    if let Some(ct) = &head.content_type {
        h.header("Content-Type", ct);
    }
    if let Some(loc) = &head.location {
        h.header("Location", loc);
    }
    for (k, v) in &head.other {
        // The configuration's fields replace the script's of the same name.
        if !face.fields.has(k) {
            h.header(k, v);
        }
    }
    match framing {
        Framing::Nothing(length) => h.finish(*length, persist),
        Framing::Length(n) => h.finish(Some(*n), persist),
        Framing::Chunked => {
            h.header("Transfer-Encoding", "chunked");
            h.finish(None, persist)
        }
        Framing::Close => h.finish(None, Persist::Close),
    }
}

/// Stream the body as the script writes it (or read and drop it, for a
/// response without one): the body bytes sent, and whether the response
/// broke its own framing (the connection must close).
fn stream_body(
    conn: &Conn<'_>,
    run: &mut Running,
    route: &CgiRoute,
    cfg: &Config,
    framing: &Framing,
    mut pending: Vec<u8>,
) -> Result<(u64, bool), Errno> {
    let mut chunk = [0u8; 16384];
    let mut sent: u64 = 0;
    loop {
        if !pending.is_empty() {
            let data: &[u8] = match framing {
                Framing::Nothing(_) => &[],
                Framing::Length(n) => {
                    &pending[..(n.saturating_sub(sent) as usize).min(pending.len())]
                }
                _ => &pending,
            };
            if !data.is_empty() {
                if let Framing::Chunked = framing {
                    let mut frame = Vec::with_capacity(data.len() + 16);
                    let _ = write!(frame, "{:x}\r\n", data.len());
                    frame.extend_from_slice(data);
                    frame.extend_from_slice(b"\r\n");
                    conn.write_all(&frame, false)?;
                } else {
                    conn.write_all(data, false)?;
                }
                sent += data.len() as u64;
            }
        }
        pending.clear();
        let stall = Instant::now() + cfg.limits.body_timeout.max(route.timeout);
        match run.read(&mut chunk, stall) {
            Ok(0) => break,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(()) => {
                crate::error!(
                    "cgi {}[{}]: response body stalled; terminating it (the response is cut)",
                    run.name,
                    run.pid
                );
                run.terminate();
                conn.cut();
                return Ok((sent, true));
            }
        }
    }
    match framing {
        Framing::Length(n) if sent < *n => {
            crate::warn!(
                "cgi {}[{}]: sent {sent} of its Content-Length {n} (the response is cut)",
                run.name,
                run.pid
            );
            conn.cut();
            return Ok((sent, true));
        }
        Framing::Chunked | Framing::Close => {
            // The end of its output is the end of the body, unless it was
            // killed (a crash, a limit, the OOM killer): then the body may
            // have been cut anywhere, and must not look whole. Its exit
            // follows the end of its output at once, unless it lingers
            // with its output closed (then it counts as done).
            run.wait_exit(Instant::now() + super::process::KILL_GRACE);
            if run.killed() {
                crate::warn!(
                    "cgi {}[{}]: {} after {sent} bytes of the body (the response is cut)",
                    run.name,
                    run.pid,
                    run.end()
                );
                conn.cut();
                return Ok((sent, true));
            }
            if let Framing::Chunked = framing {
                conn.write_all(b"0\r\n\r\n", false)?;
            }
        }
        _ => {}
    }
    Ok((sent, false))
}

/// Read and drop what the script still writes (before an internal redirect).
fn drain(run: &mut Running, deadline: Instant) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = run.read(&mut chunk, deadline) {
        if n == 0 {
            return;
        }
    }
    run.terminate();
}

/// The script failed: `status` (502, 504) to the client.
fn bad_gateway(
    conn: &Conn<'_>,
    req: &Request,
    sh: Face<'_>,
    persist: Persist,
    status: u16,
) -> Result<Outcome, Errno> {
    let sent = response::error(conn, status, sh, req.is_head(), persist)?;
    Ok(Outcome::Sent { sent, close: false })
}

/// `nph-` scripts write the whole response themselves; it goes out as is and
/// the connection closes after it.
pub fn pass_raw(conn: &Conn<'_>, run: &mut Running, cfg: &Config) -> Result<Outcome, Errno> {
    // As a close-delimited body: reset, not closed, if it is cut.
    let _ = crate::sys::set_reset_on_close(conn.fd(), true);
    let mut chunk = [0u8; 16384];
    let mut sent = 0u64;
    let mut status = 200;
    let mut first = true;
    loop {
        let stall = Instant::now() + cfg.limits.body_timeout;
        match run.read(&mut chunk, stall) {
            Ok(0) => break,
            Ok(n) => {
                if first {
                    status = std::str::from_utf8(&chunk[..n.min(12)])
                        .ok()
                        .and_then(|s| s.split(' ').nth(1))
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(200);
                    first = false;
                }
                conn.write_all(&chunk[..n], false)?;
                sent += n as u64;
            }
            Err(()) => {
                run.terminate();
                conn.cut();
                break;
            }
        }
    }
    if !conn.is_cut() {
        run.wait_exit(Instant::now() + super::process::KILL_GRACE);
        if run.killed() {
            crate::warn!(
                "cgi {}[{}]: {} after {sent} bytes (the response is cut)",
                run.name,
                run.pid,
                run.end()
            );
            conn.cut();
        } else {
            let _ = crate::sys::set_reset_on_close(conn.fd(), false);
        }
    }
    Ok(Outcome::Sent {
        sent: Sent {
            status,
            body_bytes: sent,
        },
        close: true,
    })
}
