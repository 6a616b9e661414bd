//! A site's error pages (`errors = { 404 = "/errors/404.html" }`): the file
//! its static route serves at that path, sent with the original status
//! (never 200), its type from its extension, the fields the response
//! already had (`Allow`, the site's `headers`), and no body for HEAD. A page
//! that cannot be opened (missing, not a regular file, outside the rules of
//! its route) leaves the built-in body in its place. Nothing here answers
//! with an error of its own, so no page can lead to another: no loop.

use super::conn::Conn;
use super::response::{Head, Pages, Persist, Sent};
use super::static_file;
use crate::config::Action;
use nix::errno::Errno;
use std::os::fd::OwnedFd;

/// An opened page: the file, its size, its type.
pub struct Page {
    fd: OwnedFd,
    size: u64,
    content_type: String,
}

/// The site's page for `status`, if it has one and it can be opened.
pub fn open(pages: Pages<'_>, status: u16) -> Option<Page> {
    let (_, path) = pages.site.errors.iter().find(|(s, _)| *s == status)?;
    let route = pages.cfg.site_route(pages.site, path)?;
    let Action::Static(st) = &route.action else {
        return None;
    };
    let rel = path[route.prefix.len().min(path.len())..].trim_start_matches('/');
    match static_file::open_page(pages.roots, st, rel) {
        Ok((fd, size)) => Some(Page {
            fd,
            size,
            content_type: static_file::content_type(path),
        }),
        Err(e) => {
            crate::debug!("error page {path} for {status}: {e}: the built-in one instead");
            None
        }
    }
}

/// Send `page` as the body of `head`'s response.
pub fn send(
    conn: &Conn<'_>,
    mut head: Head<'_>,
    page: Page,
    head_only: bool,
    persist: Persist,
) -> Result<Sent, Errno> {
    let status = head.status;
    head.header("Content-Type", &page.content_type);
    let out = head.finish(Some(page.size), persist);
    conn.mark_head(status, out.len());
    let with_body = !head_only && page.size > 0;
    conn.write_all(&out, with_body)?;
    if with_body {
        conn.sendfile(&page.fd, 0, page.size)?;
    }
    Ok(Sent {
        status,
        body_bytes: if with_body { page.size } else { 0 },
    })
}
