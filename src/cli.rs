//! Command line.

use std::path::PathBuf;

pub const USAGE: &str = "\
usage: lbaws [--config FILE] [--daemon [--pid-file PATH]]   run the server
       lbaws --inetd [--config FILE]                        serve one inherited connection
       lbaws check [--config FILE]   (or: lbaws -t)         validate the configuration
       lbaws check [--config FILE] --explain URL            which site and route a request for URL gets
       lbaws status [--config FILE]                         print the running server's status page
                                                            (SIGUSR2 to a running lbaws: upgrade in place)
       lbaws --help | --version

Without --config, lbaws reads /etc/lbaws/config.toml, or if that does not exist
serves a built-in \"Hello, World!\" page on http://127.0.0.1:8080/.";

#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    Run,
    Check,
    Inetd,
    /// `lbaws status`: print the status page of the running server.
    Status,
    Help,
    Version,
}

#[derive(Debug)]
pub struct Args {
    pub mode: Mode,
    pub config: Option<PathBuf>,
    pub daemon: bool,
    pub pid_file: Option<PathBuf>,
    /// `check --upgrade-format N`: also say whether this binary can take
    /// over from a running lbaws that hands over a record of format N (an
    /// upgrade in place asks this of the new binary before it executes it).
    pub upgrade_format: Option<u32>,
    /// `check --explain URL`: say which site and route answer URL.
    pub explain: Option<String>,
}

impl Args {
    /// The server's paths, made absolute against the directory it was
    /// started in: `--daemon` moves to `/`, and every reload and upgrade
    /// in place must read the same configuration file (and remove the
    /// same pid file) as the start did.
    pub fn make_paths_absolute(&mut self) -> Result<(), String> {
        for (what, p) in [
            ("--config", &mut self.config),
            ("--pid-file", &mut self.pid_file),
        ] {
            if let Some(path) = p {
                *path = std::path::absolute(&*path)
                    .map_err(|e| format!("{what} {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The arguments that run the server again as these do (an upgrade in
    /// place executes the new binary with them), `argv0` first.
    pub fn server_argv(&self, argv0: &std::ffi::OsStr) -> Vec<std::ffi::OsString> {
        let mut v = vec![argv0.to_os_string()];
        if let Some(c) = &self.config {
            v.extend(["--config".into(), c.clone().into_os_string()]);
        }
        if self.daemon {
            v.push("--daemon".into());
        }
        if let Some(p) = &self.pid_file {
            v.extend(["--pid-file".into(), p.clone().into_os_string()]);
        }
        v
    }
}

pub fn parse() -> Result<Args, String> {
    parse_from(lexopt::Parser::from_env())
}

fn parse_from(mut p: lexopt::Parser) -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut a = Args {
        mode: Mode::Run,
        config: None,
        daemon: false,
        pid_file: None,
        upgrade_format: None,
        explain: None,
    };
    let set_mode = |a: &mut Args, m: Mode| -> Result<(), String> {
        if a.mode != Mode::Run {
            return Err("conflicting modes (check, status, --inetd, -t)".into());
        }
        a.mode = m;
        Ok(())
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('c') | Long("config") => {
                a.config = Some(p.value().map_err(|e| e.to_string())?.into())
            }
            Short('t') | Long("test") => set_mode(&mut a, Mode::Check)?,
            Long("inetd") => set_mode(&mut a, Mode::Inetd)?,
            Long("daemon") | Short('d') => a.daemon = true,
            Long("pid-file") => a.pid_file = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("upgrade-format") => {
                let v = p.value().map_err(|e| e.to_string())?;
                let n = v.to_str().and_then(|s| s.parse().ok());
                a.upgrade_format = Some(n.ok_or("--upgrade-format takes a number")?);
            }
            Long("explain") => {
                let v = p.value().map_err(|e| e.to_string())?;
                a.explain = Some(v.into_string().map_err(|_| "--explain takes a URL")?);
            }
            Short('h') | Long("help") => a.mode = Mode::Help,
            Short('V') | Long("version") => a.mode = Mode::Version,
            Value(v) if v == "check" => set_mode(&mut a, Mode::Check)?,
            Value(v) if v == "status" => set_mode(&mut a, Mode::Status)?,
            Value(v) if v == "run" => {}
            other => return Err(other.unexpected().to_string()),
        }
    }
    if a.pid_file.is_some() && !a.daemon {
        return Err("--pid-file goes with --daemon".into());
    }
    if a.upgrade_format.is_some() && a.mode != Mode::Check {
        return Err("--upgrade-format goes with check".into());
    }
    if a.explain.is_some() && a.mode != Mode::Check {
        return Err("--explain goes with check".into());
    }
    if a.daemon && a.mode != Mode::Run {
        return Err("--daemon only applies to running the server".into());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, String> {
        parse_from(lexopt::Parser::from_args(args.iter()))
    }

    #[test]
    fn modes() {
        assert_eq!(p(&[]).unwrap().mode, Mode::Run);
        assert_eq!(p(&["check", "--config", "x"]).unwrap().mode, Mode::Check);
        assert_eq!(
            p(&["-t", "-c", "x"]).unwrap().config.unwrap(),
            PathBuf::from("x")
        );
        assert_eq!(p(&["--inetd"]).unwrap().mode, Mode::Inetd);
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--pid-file", "x"]).is_err());
        assert!(p(&["check", "--inetd"]).is_err());
        assert_eq!(p(&["status", "-c", "x"]).unwrap().mode, Mode::Status);
        assert!(p(&["status", "check"]).is_err());
        assert!(p(&["status", "--daemon"]).is_err());
        assert_eq!(
            p(&["check", "--upgrade-format", "1"])
                .unwrap()
                .upgrade_format,
            Some(1)
        );
        assert!(p(&["--upgrade-format", "1"]).is_err());
        assert_eq!(
            p(&["check", "--explain", "http://a/b"])
                .unwrap()
                .explain
                .as_deref(),
            Some("http://a/b")
        );
        assert!(p(&["--explain", "http://a/b"]).is_err());
        assert!(p(&["check", "--upgrade-format", "x"]).is_err());
    }

    #[test]
    fn server_paths_become_absolute_and_the_argv_says_so() {
        let mut a = p(&["run", "-d", "-csite.toml", "--pid-file=x.pid"]).unwrap();
        a.make_paths_absolute().unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(a.config.as_deref(), Some(cwd.join("site.toml").as_path()));
        let argv = a.server_argv("lbaws".as_ref());
        let again = parse_from(lexopt::Parser::from_iter(argv.iter())).unwrap();
        assert_eq!(again.config, a.config);
        assert_eq!(again.pid_file.as_deref(), Some(cwd.join("x.pid").as_path()));
        assert!(again.daemon && again.mode == Mode::Run);
        let mut b = p(&["--config", "/etc/lbaws/config.toml"]).unwrap();
        b.make_paths_absolute().unwrap();
        assert_eq!(b.config.unwrap(), PathBuf::from("/etc/lbaws/config.toml"));
    }
}
