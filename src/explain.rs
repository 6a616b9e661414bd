//! `lbaws check --explain URL`: which site and which route of the
//! configuration a request for URL would get, and why; what the response
//! would carry (fields, error pages, a redirect's target), and where its
//! access line would go. Nothing is sent anywhere: this reads the
//! configuration only.

use crate::config::{Action, CgiTarget, Config, Found, Route, SiteLog, StatusFormat};
use lbaws::proto::target;
use std::fmt::Write as _;

/// The explanation, or why the URL cannot be one a request names.
pub fn explain(cfg: &Config, url: &str) -> Result<String, String> {
    let t = target::split("GET", url)
        .ok_or_else(|| format!("{url:?} is not an http:// URL or a path beginning with '/'"))?;
    let path = target::normalize_path(t.path)
        .ok_or_else(|| format!("{url:?}: its path would be refused (400)"))?;
    let host = t.host.as_deref();
    let mut s = String::new();
    let _ = writeln!(s, "{url}");
    let site_index = cfg.site_for(host);
    let site = &cfg.sites[site_index];
    let why = match (host, host.and_then(|h| cfg.hosts.lookup(h))) {
        _ if cfg.sites.len() == 1 => "the only site".to_string(),
        (None, _) => "no host: the default site".to_string(),
        (Some(_), Some((_, Found::Exact))) => "its name".to_string(),
        (Some(_), Some((_, Found::Wildcard))) => "a wildcard name".to_string(),
        (Some(_), None) => "no site has this name: the default site".to_string(),
    };
    let names: Vec<String> = site.names.iter().map(|n| n.to_string()).collect();
    let _ = writeln!(
        s,
        "  site:   {} ({why}), at {}{}",
        site.label,
        site.origin,
        if names.is_empty() {
            String::new()
        } else {
            format!("; names {}", names.join(", "))
        }
    );
    let route = cfg.site_route(site, &path);
    match route {
        None => {
            let _ = writeln!(s, "  route:  none matches {path}: 404");
        }
        Some(r) => {
            let _ = writeln!(s, "  route:  prefix {:?} at {}", r.prefix, r.origin);
            let _ = writeln!(s, "  action: {}", action(r, cfg, &t, &path, site_index));
            if let Some(a) = &r.allow {
                let _ = writeln!(
                    s,
                    "  allow:  {} range(s){}; others get 403",
                    a.ranges.len(),
                    if a.unix { " and unix" } else { "" }
                );
            }
        }
    }
    let fields = route.map_or(&site.fields, |r| &r.fields);
    for (n, v) in &fields.list {
        let _ = writeln!(s, "  header: {n}: {v}");
    }
    for (status, page) in &site.errors {
        let _ = writeln!(s, "  error page: {status} -> {page}");
    }
    let log = match site.access {
        SiteLog::Off => "off".to_string(),
        SiteLog::File(i) => cfg.log.site_files[i].display().to_string(),
        SiteLog::Main => "[log] access".to_string(),
    };
    let _ = writeln!(s, "  access log: {log}");
    Ok(s)
}

/// What the route does with this request.
fn action(r: &Route, cfg: &Config, t: &target::Target<'_>, path: &str, site: usize) -> String {
    let below = path[r.prefix.len().min(path.len())..].trim_start_matches('/');
    match &r.action {
        Action::Respond { status, .. } => format!("respond {status}"),
        Action::Static(st) => format!("static file {}/{below}", st.root.display()),
        Action::Cgi(c) => match &c.target {
            CgiTarget::Dir(d) => format!("CGI script under {}/ ({below})", d.display()),
            CgiTarget::Script(p) => format!("CGI script {}", p.display()),
        },
        Action::Status(f) => format!(
            "status page ({})",
            match f {
                StatusFormat::Text => "text",
                StatusFormat::Json => "json",
                StatusFormat::Prometheus => "prometheus",
            }
        ),
        Action::Redirect { to, status } => {
            let host = t
                .host
                .as_deref()
                .map(|h| match h.starts_with('[') {
                    true => h.find(']').map_or(h, |i| &h[..=i]),
                    false => h.rsplit_once(':').map_or(h, |p| p.0),
                })
                .map(str::to_string)
                .or_else(|| {
                    cfg.sites[site].names.iter().find_map(|n| match n {
                        crate::config::Pattern::Wildcard(_) => None,
                        n => Some(n.to_string()),
                    })
                })
                .unwrap_or_default();
            let target = match t.query {
                Some(q) => format!("{}?{q}", t.path),
                None => t.path.to_string(),
            };
            let vars = lbaws::proto::template::Vars {
                host: &host,
                target: &target,
                path,
                query: t.query,
                scheme: "http",
            };
            match to.expand(&vars) {
                Some(l) => format!("redirect {status} to {l} ({to})"),
                None => format!("redirect {status} ({to}): no valid target for this request"),
            }
        }
    }
}
