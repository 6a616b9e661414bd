//! lbaws: a socket-activated, fork-per-connection HTTP/1.1 server.
//!
//! Start-up order, which the invariants depend on:
//! 1. block the handled signals (before any fork or descriptor exists);
//! 2. parse and validate the whole configuration (invariant 4);
//! 3. raise the soft `RLIMIT_NOFILE` to the hard limit (waiting connections
//!    cost a descriptor each, in the gate); take the listeners from systemd,
//!    or bind them all (a failure exits before READY, naming the address and
//!    errno);
//! 4. `--daemon`: detach; then drop privileges (`setgroups`, `setgid`, `setuid`);
//! 5. open the signalfd and hand everything to the supervisor, which starts
//!    the gate and sends READY=1 (invariant 5).
//!
//! An image that an upgrade in place executed starts in `upgraded` instead
//! (the configuration, listeners and privileges are those it was handed).
//!
//! Layering (imports point down): `main` (and `upgraded`) -> `supervisor` -> `gate`, `child` ->
//! `http::{worker, request, response}` -> leaves `config`, `listen`, `handoff`,
//! `scoreboard`, `signals`, `notify`, `log`, `cli`, `alloc`, `users`, `sys`,
//! `status_cmd` (the `lbaws status` client),
//! and the parsers of the crate's library target, `lbaws::proto` (request
//! heads and targets, chunked bodies, CGI response headers: pure functions
//! over bytes, which the fuzz targets in `fuzz/` reach too).
//!
//! Exit codes of the `lbaws` process: 0 stopped normally or `check` passed;
//! 64 usage error; 69 `lbaws status` could not get the page; 71 cannot set up (bind, socket, signals, privileges, daemon);
//! 78 configuration error. Workers have their own, listed in [`http`].

mod alloc;
mod child;
mod cli;
mod config;
mod explain;
mod gate;
mod handoff;
mod http;
mod listen;
mod log;
mod notify;
mod sandbox;
mod scoreboard;
mod signals;
mod status_cmd;
mod supervisor;
mod sys;
mod upgraded;
mod users;

/// This build's version, as `--version`, the log and STATUS say it.
pub const VERSION: &str = env!("LBAWS_VERSION");

use config::Config;
use std::path::Path;
use std::process::ExitCode;

/// malloc in the supervisor, a bump arena in each worker (see `alloc`).
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

const EX_USAGE: u8 = 64;
/// `lbaws status` could not get the page.
const EX_UNAVAILABLE: u8 = 69;
const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    if let Err(e) = signals::block() {
        eprintln!("lbaws: cannot block signals: {e}");
        return ExitCode::from(EX_OSERR);
    }
    signals::scan_dispositions();
    let mut image = supervisor::Image::current();
    let mut args = match cli::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lbaws: {e}\n{}", cli::USAGE);
            return ExitCode::from(EX_USAGE);
        }
    };
    match args.mode {
        cli::Mode::Help => {
            say(format_args!("{}", cli::USAGE));
            return ExitCode::SUCCESS;
        }
        cli::Mode::Version => {
            say(format_args!("lbaws {VERSION}"));
            return ExitCode::SUCCESS;
        }
        cli::Mode::Run => {
            // Absolute before anything reads them, and so in the arguments
            // an upgrade in place runs the new binary with.
            if let Err(e) = args.make_paths_absolute() {
                eprintln!("lbaws: {e}");
                return ExitCode::from(EX_USAGE);
            }
            image.args = args.server_argv(&image.args[0]);
            // Executed by an upgrade in place (or run as its check): the
            // configuration is the text the record carries, not the file.
            if let Some(record) = supervisor::upgrade::take() {
                return upgraded::start(record, args.pid_file.as_deref(), image);
            }
        }
        _ => {}
    }
    let path = config::choose_path(args.config.as_deref());
    let cfg = match config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) if matches!(args.mode, cli::Mode::Check | cli::Mode::Status) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
        Err(e) => {
            // A start that fails says why at error priority: under systemd,
            // in `journalctl -p err`; elsewhere as `check` says it.
            log::startup_error(format_args!("{e}"));
            return ExitCode::from(EX_CONFIG);
        }
    };
    match args.mode {
        cli::Mode::Check => match &args.explain {
            Some(url) => match explain::explain(&cfg, url) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lbaws check --explain: {e}");
                    ExitCode::from(EX_USAGE)
                }
            },
            None => check(&cfg, args.upgrade_format),
        },
        cli::Mode::Inetd => inetd(cfg),
        cli::Mode::Status => match status_cmd::fetch(&cfg) {
            Ok(body) => {
                let _ = std::io::Write::write_all(&mut std::io::stdout(), &body);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lbaws status: {e}");
                ExitCode::from(EX_UNAVAILABLE)
            }
        },
        _ => run(cfg, path, args.daemon, args.pid_file.as_deref(), image),
    }
}

/// `lbaws check`: the configuration is valid; with `--upgrade-format N`,
/// also that this binary can take over from an lbaws handing over a record
/// of that format (what lbaws 0.2.0 and 0.3.0 ask before an upgrade in
/// place; later versions run the check as the exec, see `upgraded`).
fn check(cfg: &Config, upgrade_format: Option<u32>) -> ExitCode {
    if let Some(n) = upgrade_format {
        if n != supervisor::upgrade::FORMAT {
            eprintln!(
                "lbaws {VERSION} cannot take over from this lbaws: it hands over format {n}, this binary reads {}",
                supervisor::upgrade::FORMAT
            );
            return ExitCode::from(EX_CONFIG);
        }
    }
    say(format_args!("configuration OK ({})", cfg.source));
    for w in &cfg.warnings {
        say(format_args!("warning: {w}"));
    }
    if let Some(w) = listen::head_room_check(cfg.limits.max_header_bytes) {
        say(format_args!("{w}"));
    }
    for line in sandbox::describe(cfg) {
        say(format_args!("{line}"));
    }
    match sandbox::prepare(cfg) {
        Ok(p) => {
            say(format_args!("{}", p.summary));
            if let Some(l) = &p.limits {
                say(format_args!("{l}"));
            }
            for m in &p.missing {
                say(format_args!(
                    "sandbox: {} does not exist: it grants nothing",
                    m.display()
                ));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", cfg.source);
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// A line on standard output, for `check`, `--help` and `--version`. A
/// reader that went away (`lbaws check | head -1`) is no error: what is
/// left of the output goes nowhere and the exit code stays the command's
/// (`println!` would panic, and a panic aborts).
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// What a start does once the listeners are there (and privileges
/// dropped): the sandbox, the signalfd, the warm-up; the supervisor's I/O.
fn loop_io(
    cfg: &Config,
    mut listeners: Vec<listen::Listener>,
    notifier: notify::Notifier,
) -> Result<
    (
        Vec<listen::Listener>,
        nix::sys::signalfd::SignalFd,
        notify::Notifier,
    ),
    ExitCode,
> {
    enter_sandbox_mode(cfg, true).map_err(|(code, why)| {
        error!("{why}");
        ExitCode::from(code)
    })?;
    let signal_fd = signals::open().map_err(|e| {
        error!("cannot open signalfd: {e}");
        ExitCode::from(EX_OSERR)
    })?;
    http::warm_up(cfg);
    alloc::reserve_worker_arena();
    listen::tune(&mut listeners, &cfg.limits);
    Ok((listeners, signal_fd, notifier))
}

/// The sandbox `cfg` asks for, into use for every worker; logged once.
/// First, before anything is forked (`settle`, but in an upgrade's check,
/// which forks nothing and must move nothing): the cgroup layout for CGI
/// limits, where lbaws runs in a delegated subtree. An error: the exit
/// code and why.
fn enter_sandbox_mode(cfg: &Config, settle: bool) -> Result<(), (u8, String)> {
    if settle {
        sandbox::settle_cgroup();
    }
    let p = sandbox::prepare(cfg).map_err(|e| (EX_CONFIG, format!("{e}; refusing to serve")))?;
    info!("{}", p.summary);
    if let Some(l) = &p.limits {
        info!("{l}");
    }
    for m in &p.missing {
        warn!("sandbox: {} does not exist: it grants nothing", m.display());
    }
    let _ = sandbox::install(p);
    // Before the first fork (the gate's): everything inherits it.
    if let Err(e) = sandbox::attach_shared() {
        let why = format!("cannot attach the seccomp filter: {e}");
        if cfg.sandbox.mode == config::SandboxMode::Required {
            return Err((EX_OSERR, why));
        }
        error!("{why}");
    }
    Ok(())
}

/// The supervisor has stopped: the pid file goes, and the exit code.
fn finish(code: i32, pid_file: Option<&Path>) -> ExitCode {
    if let Some(p) = pid_file {
        if let Err(e) = std::fs::remove_file(p) {
            warn!("cannot remove the pid file {}: {e}", p.display());
        }
    }
    ExitCode::from(code as u8)
}

fn run(
    cfg: Config,
    path: Option<std::path::PathBuf>,
    daemon: bool,
    pid_file: Option<&Path>,
    image: supervisor::Image,
) -> ExitCode {
    log::configure(cfg.log.level, cfg.log.target, false);
    if path.is_none() {
        info!(
            "no --config and no {}: using the built-in configuration, \"Hello, World!\" on http://127.0.0.1:8080/",
            config::DEFAULT_PATH
        );
    }
    if let (true, Some(p)) = (daemon, pid_file) {
        if let Err(e) = check_pid_file_dir(&cfg, p) {
            error!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    }
    let notifier = notify::Notifier::from_env();
    sys::raise_nofile();
    let listeners = match listeners(&cfg) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if daemon {
        if let Err(e) = detach(&cfg, pid_file) {
            error!("cannot daemonize: {e}");
            return ExitCode::from(EX_OSERR);
        }
    }
    if let Err(e) = log::configure_access(&cfg.log) {
        error!("{e}");
        return ExitCode::from(EX_OSERR);
    }
    if let Err(e) = drop_privileges(&cfg) {
        error!("{e}; refusing to serve as root");
        return ExitCode::from(EX_OSERR);
    }
    let io = match loop_io(&cfg, listeners, notifier) {
        Ok(io) => io,
        Err(code) => return code,
    };
    let sup = match supervisor::Supervisor::new(cfg, path, daemon, io, image) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot set up the supervisor: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    finish(sup.run(), pid_file)
}

/// systemd's sockets, or every `[[listen]]` entry bound (all or nothing).
fn listeners(cfg: &Config) -> Result<Vec<listen::Listener>, ExitCode> {
    match listen::from_systemd(&cfg.listen) {
        Some(Ok(l)) => Ok(l),
        Some(Err(e)) => {
            error!("{e}");
            Err(ExitCode::from(EX_OSERR))
        }
        None => {
            if cfg.listen.is_empty() {
                error!(
                    "{}: no [[listen]] entry and no socket from systemd: nothing to serve",
                    cfg.source
                );
                return Err(ExitCode::from(EX_CONFIG));
            }
            let mut v = Vec::with_capacity(cfg.listen.len());
            for spec in &cfg.listen {
                match listen::bind(spec) {
                    Ok(l) => v.push(l),
                    Err(e) => {
                        error!("{e}");
                        for l in v {
                            l.close();
                        }
                        return Err(ExitCode::from(EX_OSERR));
                    }
                }
            }
            Ok(v)
        }
    }
}

/// `--daemon`: detach, write the pid file (given to `[server] user`, who
/// removes it at exit), log to syslog from now on.
fn detach(cfg: &Config, pid_file: Option<&Path>) -> Result<(), String> {
    info!("detaching (--daemon); logging to syslog from now on");
    let mut d = daemonize::Daemonize::new()
        .working_directory("/")
        .umask(0o022);
    if let Some(p) = pid_file {
        d = d.pid_file(p);
    }
    d.start().map_err(|e| e.to_string())?;
    if let (Some(p), Some((_, uid, gid))) = (pid_file, &cfg.server.user) {
        // Still root: the file is the dropped user's, which may then
        // remove it at exit (also from a sticky directory).
        if nix::unistd::geteuid().is_root() {
            let gid = cfg.server.group.as_ref().map_or(*gid, |g| g.1);
            let _ = std::os::unix::fs::chown(p, Some(*uid), Some(gid));
        }
    }
    log::configure(cfg.log.level, cfg.log.target, true);
    Ok(())
}

/// `--pid-file` with a `[server] user` to become: the pid file is removed at
/// exit by that user, so its directory must let that user remove it. Refused
/// before anything starts rather than left behind at exit (a root-side
/// remover would be one more privileged process for a file; a directory the
/// user owns, such as /run/lbaws/, is the usual answer).
fn check_pid_file_dir(cfg: &Config, pid_file: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Some((name, uid, user_gid)) = &cfg.server.user else {
        return Ok(());
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(()); // no privilege drop: the file stays ours
    }
    let gid = cfg.server.group.as_ref().map_or(*user_gid, |g| g.1);
    let dir = match pid_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let m = std::fs::metadata(dir)
        .map_err(|e| format!("--pid-file {}: {}: {e}", pid_file.display(), dir.display()))?;
    let mode = m.mode();
    let may = if m.uid() == *uid {
        mode & 0o300 == 0o300
    } else if m.gid() == gid {
        mode & 0o030 == 0o030
    } else {
        mode & 0o003 == 0o003
    };
    if may {
        Ok(())
    } else {
        Err(format!(
            "--pid-file {}: user {name} could not remove it at exit ({} is not writable by it); \
             use a directory {name} may write, e.g. /run/lbaws/",
            pid_file.display(),
            dir.display()
        ))
    }
}

/// `[server] user`/`group`: after the listeners exist, become that user for
/// good. Only root can; a non-root start keeps its identity (with a warning
/// unless it already is that user).
fn drop_privileges(cfg: &Config) -> Result<(), String> {
    use nix::unistd::{getegid, geteuid, setgid, setgroups, setuid, Gid, Uid};
    let (user, group) = (&cfg.server.user, &cfg.server.group);
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    if !geteuid().is_root() {
        let same_user = user
            .as_ref()
            .is_none_or(|(_, uid, _)| geteuid().as_raw() == *uid);
        let same_group = group
            .as_ref()
            .is_none_or(|(_, gid)| getegid().as_raw() == *gid);
        if !(same_user && same_group) {
            warn!("[server] user/group ignored: not started as root");
        }
        return Ok(());
    }
    let gid = group
        .as_ref()
        .map(|g| g.1)
        .or(user.as_ref().map(|u| u.2))
        .map(Gid::from_raw);
    if let Some(gid) = gid {
        setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
        setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    }
    if let Some((name, uid, _)) = user {
        setuid(Uid::from_raw(*uid)).map_err(|e| format!("setuid({name}): {e}"))?;
        // Paranoia: regaining root must be impossible now.
        if setuid(Uid::from_raw(0)).is_ok() {
            return Err(format!("setuid({name}) did not drop root"));
        }
        info!("running as user {name} (uid {uid}, gid {})", getegid());
    }
    Ok(())
}

/// `--inetd`: serve the one inherited connection, as a worker would, and exit.
fn inetd(cfg: Config) -> ExitCode {
    // Under inetd (or StandardInput=socket), stderr may be the connection itself:
    // then log to syslog rather than into the client's response.
    let stderr_is_conn = match (
        nix::sys::stat::fstat(std::io::stdin()),
        nix::sys::stat::fstat(std::io::stderr()),
    ) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    };
    log::configure(cfg.log.level, cfg.log.target, stderr_is_conn);
    if let Err(e) = log::configure_access(&cfg.log) {
        error!("{e}");
        return ExitCode::from(EX_OSERR);
    }
    let conn = match listen::inherited_connection() {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    if let Err(e) = drop_privileges(&cfg) {
        error!("{e}; refusing to serve as root");
        return ExitCode::from(EX_OSERR);
    }
    let _ = signals::reset_in_worker();
    // The same sandbox as a forked worker's (prepared here, for this one
    // connection).
    if cfg
        .routes
        .iter()
        .any(|r| matches!(r.action, config::Action::Cgi(_)))
    {
        sandbox::settle_cgroup();
    }
    match sandbox::prepare(&cfg) {
        Ok(p) => {
            let _ = sandbox::install(p);
        }
        Err(e) => {
            error!("{e}; refusing to serve");
            return ExitCode::from(EX_CONFIG);
        }
    }
    if let Err(e) = sandbox::attach_shared().and_then(|()| sandbox::enter_worker()) {
        error!("cannot enter the sandbox: {e}");
        return ExitCode::from(EX_OSERR);
    }
    listen::set_send_tick(&conn);
    let peer = listen::Peer::of(&conn);
    let code = http::worker::serve(&conn, peer, &cfg, http::worker::Ctx::default());
    drop(conn);
    sys::exit_now(code)
}
