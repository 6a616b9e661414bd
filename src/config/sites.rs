//! `[[site]]`: name-based virtual hosts, and which site is the default.
//!
//! - A site has `names` (exact, `*.` wildcards, IP literals; see
//!   `lbaws::proto::vhost`), its routes (`[[site.route]]`), `headers`,
//!   `errors` (error pages), `access` (a log file of its own, or "off") and
//!   `default = true` on at most one site. A name belongs to one site.
//! - The top-level `[[route]]` entries belong to the default site: alone
//!   (no `[[site]]`) they are the only site, as before sites existed; with a
//!   site marked `default = true` they join its routes (a prefix in both is
//!   refused); with sites none of which is marked, they make a site of their
//!   own, named `default`, which is the default. Without top-level routes
//!   and without a mark, the first site is the default.
//! - Sites come in file order: the main file's, then each included file's.

use super::fields::{fields, Fields};
use super::include::File;
use super::raw::{RawRoute, RawSite, RawTable};
use super::*;
use std::ops::Range;
use toml::Spanned;

/// An error or warning located in one of the files: its index, span, text.
pub(super) type Located = (usize, Range<usize>, String);

/// The most sites a configuration may have.
pub const MAX_SITES: usize = 1024;
/// The most names one site may have.
pub const MAX_NAMES: usize = 256;
/// The most routes one site may have.
pub const MAX_ROUTES: usize = 1024;
/// The most sites with an access log file of their own (each is a
/// descriptor every worker keeps).
pub const MAX_SITE_LOGS: usize = 64;

/// What the sites come to.
pub(super) struct Built {
    pub routes: Vec<Route>,
    pub sites: Vec<Site>,
    pub default_site: usize,
    pub hosts: Names,
    pub site_logs: Vec<PathBuf>,
    pub warnings: Vec<Located>,
}

/// One site to build: where it is written, and its parts.
struct Spec<'r> {
    file: usize,
    raw: Option<&'r Spanned<RawSite>>,
    /// Top-level routes (file 0) it takes besides its own.
    top: &'r [Spanned<RawRoute>],
}

/// The sites of the main file's `top` routes and `[[site]]` tables (file
/// 0) and of the included files.
pub(super) fn build(
    top: &[Spanned<RawRoute>],
    sites: &[(usize, &Spanned<RawSite>)],
    files: &[File],
) -> Result<Built, Located> {
    if sites.len() > MAX_SITES {
        let (f, s) = sites[MAX_SITES];
        return Err((f, s.span(), format!("more than {MAX_SITES} sites")));
    }
    let mut marked: Option<usize> = None;
    for (i, (f, s)) in sites.iter().enumerate() {
        if let Some(d) = &s.get_ref().default {
            if *d.get_ref() {
                if let Some(m) = marked {
                    return Err((
                        *f,
                        d.span(),
                        format!(
                            "default = true on a second site (the first is at {})",
                            at(files, sites[m].0, sites[m].1.span())
                        ),
                    ));
                }
                marked = Some(i);
            }
        }
    }
    let mut specs: Vec<Spec<'_>> = Vec::new();
    let own_site = sites.is_empty() || (marked.is_none() && !top.is_empty());
    if own_site {
        specs.push(Spec {
            file: 0,
            raw: None,
            top,
        });
    }
    let default_site = if own_site { 0 } else { marked.unwrap_or(0) };
    for (i, (f, s)) in sites.iter().enumerate() {
        let joins = marked == Some(i);
        specs.push(Spec {
            file: *f,
            raw: Some(s),
            top: if joins { top } else { &[] },
        });
    }
    let mut b = Built {
        routes: Vec::new(),
        sites: Vec::new(),
        default_site,
        hosts: Names::default(),
        site_logs: Vec::new(),
        warnings: Vec::new(),
    };
    let mut cgi_routes = 0;
    for (index, spec) in specs.iter().enumerate() {
        let site = site(
            spec,
            index,
            index == default_site,
            files,
            &mut b,
            &mut cgi_routes,
        )?;
        b.sites.push(site);
    }
    Ok(b)
}

/// `FILE:LINE:COLUMN` of a span.
fn at(files: &[File], file: usize, span: Range<usize>) -> String {
    let f = &files[file];
    let (l, c) = line_col(&f.text, span.start);
    format!("{}:{l}:{c}", f.name)
}

/// Build site number `index` (its routes go to `b.routes`).
fn site(
    spec: &Spec<'_>,
    index: usize,
    is_default: bool,
    files: &[File],
    b: &mut Built,
    cgi_routes: &mut usize,
) -> Result<Site, Located> {
    let file = spec.file;
    let here = |e: (Range<usize>, String)| (file, e.0, e.1);
    let (names, fields_, origin) = match spec.raw {
        None => (
            Vec::new(),
            Fields::default(),
            match spec.top.first() {
                Some(r) => at(files, 0, r.span()),
                None => files[0].name.clone(),
            },
        ),
        Some(raw) => {
            let names = names(raw, index, file, &b.sites, &mut b.hosts)?;
            let f = match &raw.get_ref().headers {
                Some(t) => fields(t).map_err(here)?,
                None => Fields::default(),
            };
            (names, f, at(files, file, raw.span()))
        }
    };
    if names.is_empty() && !is_default {
        let span = spec.raw.map_or(0..0, |r| r.span());
        return Err((
            file,
            span,
            "a site needs names (only the default site may have none)".into(),
        ));
    }
    let label = names
        .first()
        .map_or_else(|| DEFAULT_LABEL.to_string(), |n| n.to_string());

    // Its routes: the top-level ones it takes (file 0), then its own.
    let own: &[Spanned<RawRoute>] = spec.raw.map_or(&[], |r| &r.get_ref().route);
    let all = spec
        .top
        .iter()
        .map(|r| (0, r))
        .chain(own.iter().map(|r| (file, r)));
    let mut mine: Vec<usize> = Vec::new();
    for (rf, r) in all {
        if mine.len() == MAX_ROUTES {
            return Err((
                rf,
                r.span(),
                format!("more than {MAX_ROUTES} routes in one site"),
            ));
        }
        let prefix = r.get_ref().prefix.get_ref();
        if let Some(&o) = mine.iter().find(|&&o| &b.routes[o].prefix == prefix) {
            return Err((
                rf,
                r.get_ref().prefix.span(),
                format!(
                    "duplicate route prefix {prefix:?} in this site (also at {})",
                    b.routes[o].origin
                ),
            ));
        }
        let mut route = super::routes::route(r).map_err(|e| (rf, e.0, e.1))?;
        if let Action::Cgi(c) = &mut route.action {
            if *cgi_routes == MAX_CGI_ROUTES {
                return Err((
                    rf,
                    r.span(),
                    format!("more than {MAX_CGI_ROUTES} cgi routes"),
                ));
            }
            c.slot = *cgi_routes;
            *cgi_routes += 1;
        }
        let own_fields = match &r.get_ref().headers {
            Some(t) => fields(t).map_err(|e| (rf, e.0, e.1))?,
            None => Fields::default(),
        };
        route.fields = own_fields.over(&fields_);
        route.site = index;
        route.origin = at(files, rf, r.span());
        mine.push(b.routes.len());
        b.routes.push(route);
    }
    // Longest prefix first: a stable sort keeps file order among equals (none: duplicates refused).
    mine.sort_by_key(|&i| std::cmp::Reverse(b.routes[i].prefix.len()));
    if let (true, Some(raw)) = (mine.is_empty(), spec.raw) {
        b.warnings.push((
            file,
            raw.span(),
            format!("site {label} has no routes: every request for it gets 404"),
        ));
    }

    let errors = match spec.raw.and_then(|r| r.get_ref().errors.as_ref()) {
        Some(t) => error_pages(t, &mine, &b.routes).map_err(here)?,
        None => Vec::new(),
    };
    let access = match spec.raw.and_then(|r| r.get_ref().access.as_ref()) {
        None => SiteLog::Main,
        Some(a) => site_log(a, &mut b.site_logs).map_err(here)?,
    };
    Ok(Site {
        label,
        names,
        routes: mine,
        fields: fields_,
        errors,
        access,
        origin,
        row: 0,
    })
}

/// A site's `names`, checked and entered in `hosts` for site `index`.
fn names(
    raw: &Spanned<RawSite>,
    index: usize,
    file: usize,
    built: &[Site],
    hosts: &mut Names,
) -> Result<Vec<Pattern>, Located> {
    let Some(list) = &raw.get_ref().names else {
        return Ok(Vec::new());
    };
    if list.get_ref().is_empty() {
        return Err((
            file,
            list.span(),
            "names is empty: leave it out for a default site without names".into(),
        ));
    }
    if list.get_ref().len() > MAX_NAMES {
        return Err((
            file,
            list.span(),
            format!("names: more than {MAX_NAMES} in one site"),
        ));
    }
    let mut out = Vec::new();
    for n in list.get_ref() {
        let p = lbaws::proto::vhost::pattern(n.get_ref()).map_err(|e| (file, n.span(), e))?;
        if let Err(other) = hosts.insert(&p, index as u32) {
            let whose = match built.get(other as usize) {
                Some(s) if other as usize != index => format!("the site at {}", s.origin),
                _ => "this site".to_string(),
            };
            return Err((
                file,
                n.span(),
                format!("name {p} is claimed twice: {whose} has it already"),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// `errors = { 404 = "/errors/404.html", ... }`: statuses 400-599, each a
/// path that one of the site's static routes serves.
fn error_pages(
    t: &RawTable,
    mine: &[usize],
    routes: &[Route],
) -> Result<Vec<(u16, String)>, super::validate::Invalid> {
    let mut out = Vec::new();
    for (k, v) in t.get_ref() {
        let status = match k.get_ref().parse::<u16>() {
            Ok(n) if (400..=599).contains(&n) => n,
            _ => {
                return Err((
                    k.span(),
                    format!("errors: {:?} is not a status from 400 to 599", k.get_ref()),
                ))
            }
        };
        let path = v.get_ref();
        let normal = lbaws::proto::target::normalize_path(path);
        if !path.starts_with('/') || path.len() > 1024 || normal.as_deref() != Some(path) {
            return Err((
                v.span(),
                format!(
                    "error page {path:?} must be a plain absolute path (like \"/errors/404.html\")"
                ),
            ));
        }
        let route = mine
            .iter()
            .map(|&i| &routes[i])
            .find(|r| prefix_matches(&r.prefix, path));
        if !matches!(route.map(|r| &r.action), Some(Action::Static(_))) {
            return Err((
                v.span(),
                format!("error page {path:?}: no static route of this site serves it"),
            ));
        }
        out.push((status, path.clone()));
    }
    Ok(out)
}

/// A site's `access`: "off", or an absolute path (each file opened once).
fn site_log(
    a: &Spanned<String>,
    logs: &mut Vec<PathBuf>,
) -> Result<SiteLog, (Range<usize>, String)> {
    let v = a.get_ref();
    if v == "off" {
        return Ok(SiteLog::Off);
    }
    if !v.starts_with('/') || v.contains('\0') {
        return Err((
            a.span(),
            format!("site access log {v:?}: expected \"off\" or an absolute path"),
        ));
    }
    let p = PathBuf::from(v);
    if let Some(i) = logs.iter().position(|l| *l == p) {
        return Ok(SiteLog::File(i));
    }
    if logs.len() == MAX_SITE_LOGS {
        return Err((
            a.span(),
            format!("more than {MAX_SITE_LOGS} site access log files"),
        ));
    }
    logs.push(p);
    Ok(SiteLog::File(logs.len() - 1))
}
