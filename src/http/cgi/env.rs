//! The meta-variables a script gets (RFC 3875 4.1), built from nothing:
//! lbaws's own environment never leaks into a script.
//!
//! `HTTP_*` comes from each request header but those that RFC 3875 gives
//! variables of their own (`Content-Type`, `Content-Length`), the hop-by-hop
//! ones, `Proxy` (httpoxy: `HTTP_PROXY` would be taken for the proxy
//! setting), and names with an underscore: `-` becomes `_` in a variable's
//! name, so `X_Forwarded_For` would pass for `X-Forwarded-For`, which a proxy
//! in front may have set and a script may trust (Apache and nginx drop them
//! too; logged at debug level). Duplicates are joined with `, ` (cookies with
//! `; `). Then `PATH` (a standard one unless the route's `env` sets it) and
//! the route's `env`.

use super::resolve::Script;
use super::CgiRequest;
use crate::config::{CgiRoute, CgiTarget, Config};
use crate::http::conn::Conn;
use crate::listen::Peer;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Request headers that do not become `HTTP_*`.
const SKIP: [&str; 10] = [
    "proxy", // httpoxy
    "content-type",
    "content-length",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// A C string of `b` (NULs, which no path or variable can hold, dropped).
pub fn cstring(b: &[u8]) -> CString {
    CString::new(b.iter().copied().filter(|&c| c != 0).collect::<Vec<u8>>()).unwrap_or_default()
}

/// The script's environment, as `NAME=value` strings.
pub fn environment(
    cx: &CgiRequest<'_>,
    script: &Script,
    route: &CgiRoute,
    cfg: &Config,
    conn: &Conn<'_>,
) -> Vec<CString> {
    let mut env = request_variables(cx, script, route, cfg);
    server_and_remote(&mut env, cx, conn);
    env.extend(http_variables(cx));
    if !route.env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), b"/usr/local/bin:/usr/bin:/bin".to_vec()));
    }
    for (k, v) in &route.env {
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.as_bytes().to_vec()));
    }
    env.into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_bytes();
            kv.push(b'=');
            kv.extend_from_slice(&v);
            cstring(&kv)
        })
        .collect()
}

type Vars = Vec<(String, Vec<u8>)>;

/// What the request and the script say: method, URI, names, the body's type
/// and length.
fn request_variables(cx: &CgiRequest<'_>, script: &Script, route: &CgiRoute, cfg: &Config) -> Vars {
    let req = cx.req;
    let mut env: Vars = Vec::new();
    let mut set = |k: &str, v: &[u8]| env.push((k.to_string(), v.to_vec()));
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set(
        "SERVER_SOFTWARE",
        concat!("lbaws/", env!("LBAWS_VERSION")).as_bytes(),
    );
    set(
        "SERVER_PROTOCOL",
        format!("HTTP/1.{}", req.version).as_bytes(),
    );
    set("REQUEST_METHOD", req.method.as_bytes());
    set("REQUEST_URI", req.target.as_bytes());
    set(
        "QUERY_STRING",
        req.query.as_deref().unwrap_or("").as_bytes(),
    );
    set("SCRIPT_NAME", script.script_name.as_bytes());
    set(
        "SCRIPT_FILENAME",
        script.path.as_os_str().as_encoded_bytes(),
    );
    let docroot = document_root(cfg, cx.site, route);
    set("DOCUMENT_ROOT", docroot.as_os_str().as_encoded_bytes());
    if let Some(pi) = &script.path_info {
        set("PATH_INFO", pi.as_bytes());
        let translated = format!("{}{pi}", docroot.display());
        set("PATH_TRANSLATED", translated.as_bytes());
    }
    if let Some(ct) = req.header("content-type") {
        set("CONTENT_TYPE", ct);
    }
    if let Some((_, len)) = &cx.body {
        set("CONTENT_LENGTH", len.to_string().as_bytes());
    }
    env
}

/// SERVER_NAME and SERVER_PORT (this end), REMOTE_ADDR and REMOTE_PORT.
fn server_and_remote(env: &mut Vars, cx: &CgiRequest<'_>, conn: &Conn<'_>) {
    let mut set = |k: &str, v: &[u8]| env.push((k.to_string(), v.to_vec()));
    let local = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(conn.raw_fd())
        .ok()
        .map(|sa| Peer::from_storage(&sa));
    let (local_ip, local_port) = match local {
        Some(Peer::Inet(a)) => (a.ip().to_canonical().to_string(), a.port().to_string()),
        _ => ("localhost".to_string(), "0".to_string()),
    };
    let server_name = match &cx.req.host {
        Some(h) if h.starts_with('[') => h
            .split(']')
            .next()
            .map(|s| format!("{s}]"))
            .unwrap_or_default(),
        Some(h) => h
            .rsplit_once(':')
            .map_or(h.as_str(), |(n, _)| n)
            .to_string(),
        None => local_ip,
    };
    set("SERVER_NAME", server_name.as_bytes());
    set("SERVER_PORT", local_port.as_bytes());
    match cx.peer {
        Peer::Inet(a) => {
            set("REMOTE_ADDR", a.ip().to_canonical().to_string().as_bytes());
            set("REMOTE_PORT", a.port().to_string().as_bytes());
        }
        Peer::Unix => set("REMOTE_ADDR", b"127.0.0.1"),
    }
}

/// HTTP_* for every request header but those RFC 3875 or safety exclude.
fn http_variables(cx: &CgiRequest<'_>) -> Vars {
    let mut http: Vars = Vec::new();
    for (name, value) in &cx.req.headers {
        if SKIP.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            continue;
        }
        if name.contains('_') {
            crate::debug!(
                "{}: request header {name:?} not passed to the script (its name has '_')",
                cx.peer
            );
            continue;
        }
        let key: String = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue; // a name that cannot be a variable
        }
        match http.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                let sep: &[u8] = if key == "HTTP_COOKIE" { b"; " } else { b", " };
                v.extend_from_slice(sep);
                v.extend_from_slice(value);
            }
            None => http.push((key, value.clone())),
        }
    }
    http
}

/// DOCUMENT_ROOT: the root of the site's static route serving "/", if
/// there is one, else the CGI directory (or the script's directory).
fn document_root(cfg: &Config, site: &crate::config::Site, route: &CgiRoute) -> PathBuf {
    if let Some(crate::config::Route {
        action: crate::config::Action::Static(st),
        ..
    }) = cfg.site_route(site, "/")
    {
        return st.root.clone();
    }
    match &route.target {
        CgiTarget::Dir(d) => d.clone(),
        CgiTarget::Script(s) => s.parent().unwrap_or(Path::new("/")).to_path_buf(),
    }
}
