//! The documentation stays true of the code: every key the configuration
//! parser accepts is in lbaws.toml(5), under its table; both man pages say
//! the version in Cargo.toml and the date of the changelog's top entry; the
//! README stays short.
//!
//! The keys come from the real binary, not from a list kept here: `lbaws
//! check` on a file with an unknown key in a table answers with every key
//! that table takes (serde's "unknown field `x`, expected one of ..."), and
//! a key whose value is a table is probed the same way, so a key or a table
//! added to `src/config/raw.rs` is looked for here at once.

mod util;

use std::path::Path;
use std::process::Command;
use util::*;

fn repo(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `lbaws check` on `text`; its stderr.
fn check(dir: &Path, text: &str) -> String {
    let cfg = dir.join("probe.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The keys a table takes, if `text` puts an unknown key `bogus` in a table
/// (None if the error is another: the place is not a table of keys).
fn keys_of(dir: &Path, text: &str) -> Option<Vec<String>> {
    let err = check(dir, text);
    let rest = err.split("unknown field `bogus`, expected ").nth(1)?;
    let line = rest.lines().next().unwrap_or("");
    Some(
        line.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every table of the configuration file: (its header as written in the
/// man page, e.g. "[server]", "[[route]]"; the path of keys below it that
/// leads to an inline table, e.g. ["cgi"]; its keys).
fn tables() -> Vec<(String, Vec<String>, Vec<String>)> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let top = keys_of(dir, "bogus = 1\n").expect("the top level's keys");
    assert!(top.len() >= 5, "{top:?}");
    let mut found = Vec::new();
    for section in &top {
        // A table, or an array of tables; else a key of the top level
        // (`include`), documented before the tables, in DESCRIPTION.
        let Some((header, keys)) = [format!("[{section}]"), format!("[[{section}]]")]
            .into_iter()
            .find_map(|h| Some((h.clone(), keys_of(dir, &format!("{h}\nbogus = 1\n"))?)))
        else {
            found.push(("DESCRIPTION".to_string(), Vec::new(), vec![section.clone()]));
            continue;
        };
        // Keys whose value is a table of keys of its own (e.g. a route's
        // `cgi = { ... }`), one level down (the file has no deeper ones).
        for key in &keys {
            let probe = format!("{header}\n{key} = {{ bogus = 1 }}\n");
            if let Some(inner) = keys_of(dir, &probe) {
                found.push((header.clone(), vec![key.clone()], inner));
            }
        }
        found.push((header, Vec::new(), keys));
    }
    found
}

/// The text of the man page's section `.SH "HEADER"`, up to the next `.SH`.
fn man_section<'a>(page: &'a str, header: &str) -> Option<&'a str> {
    let start = page
        .find(&format!(".SH \"{header}\"\n"))
        .or_else(|| page.find(&format!(".SH {header}\n")))?;
    let body = &page[start + 1..];
    let end = body.find("\n.SH ").map_or(body.len(), |e| e + 1);
    Some(&body[..end])
}

#[test]
fn every_configuration_key_is_in_lbaws_toml_5() {
    let page = repo("packaging/lbaws.toml.5");
    let mut missing = Vec::new();
    let tables = tables();
    for (header, path, keys) in &tables {
        let Some(section) = man_section(&page, header) else {
            missing.push(format!("a section .SH \"{header}\""));
            continue;
        };
        match path.as_slice() {
            // A key of the table: an entry `.BR key " = \fItype\fR"`.
            [] => {
                for key in keys {
                    if !section.contains(&format!("\n.BR {key} \" = ")) {
                        missing.push(format!("{header} {key}"));
                    }
                }
            }
            // A key of an inline table: named in its entry's line,
            // `.BR cgi " = { dir = \fIstring\fR, ... }"`.
            [outer] => {
                let entry = section
                    .lines()
                    .find(|l| l.starts_with(&format!(".BR {outer} \" = {{")));
                let Some(entry) = entry else {
                    missing.push(format!("{header} {outer} = {{ ... }}"));
                    continue;
                };
                for key in keys {
                    if !entry.contains(&format!(" {key} = ")) {
                        missing.push(format!("{header} {outer}.{key}"));
                    }
                }
            }
            _ => unreachable!(),
        }
    }
    assert!(
        missing.is_empty(),
        "packaging/lbaws.toml.5 does not document what the parser takes: {missing:?}\n\
         (the tables found: {tables:?})"
    );
}

/// "Wed, 02 Dec 2026 02:00:00 +0000" -> "2026-12-02".
fn iso_date(rfc2822: &str) -> String {
    let f: Vec<&str> = rfc2822.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months
        .iter()
        .position(|m| *m == f[2])
        .unwrap_or_else(|| panic!("a month in {rfc2822:?}"))
        + 1;
    format!("{}-{month:02}-{:02}", f[3], f[1].parse::<u32>().unwrap())
}

#[test]
fn the_man_pages_say_this_version_and_the_changelogs_date() {
    let version = env!("CARGO_PKG_VERSION");
    let changelog = repo("packaging/changelog");
    // "lbaws (0.3.0-1) unstable; urgency=medium" ... " -- NAME <MAIL>  DATE"
    let top = changelog.lines().next().unwrap();
    let deb_version = top.split(['(', ')']).nth(1).unwrap();
    assert_eq!(
        deb_version.rsplit_once('-').map_or(deb_version, |v| v.0),
        version,
        "packaging/changelog's top entry is not Cargo.toml's version"
    );
    let trailer = changelog
        .lines()
        .find(|l| l.starts_with(" -- "))
        .expect("a changelog trailer");
    let date = iso_date(trailer.split("  ").nth(1).expect("the trailer's date"));
    for page in ["packaging/lbaws.8", "packaging/lbaws.toml.5"] {
        let text = repo(page);
        let th = text
            .lines()
            .find(|l| l.starts_with(".TH "))
            .unwrap_or_else(|| panic!("{page}: no .TH line"));
        let quoted: Vec<&str> = th.split('"').skip(1).step_by(2).collect();
        assert_eq!(
            quoted.first().copied(),
            Some(date.as_str()),
            "{page}: {th:?}: the date is not the changelog's top entry's ({date})"
        );
        assert_eq!(
            quoted.get(1).copied(),
            Some(format!("lbaws {version}").as_str()),
            "{page}: {th:?}: the version is not Cargo.toml's ({version})"
        );
    }
}

#[test]
fn the_readme_stays_short() {
    let readme = repo("README.md");
    assert!(
        readme.len() <= 16_000,
        "README.md is {} bytes: at most 16,000 (the reference lives in the man \
         pages, the design in docs/ARCHITECTURE.md)",
        readme.len()
    );
}
