//! The start of an image that an upgrade in place executed
//! (`supervisor::upgrade`, which has the whole story): the upgrade's check,
//! the take-over, and the way back to the image before. `main` sends a
//! server start here when the environment names an upgrade record.

use super::{enter_sandbox_mode, finish, say, EX_CONFIG, EX_OSERR, VERSION};
use crate::{alloc, config, http, listen, log, notify, sandbox, signals, supervisor, sys};
use std::path::Path;
use std::process::ExitCode;

/// A start by an upgrade in place (`supervisor::upgrade`): its check, or
/// the take-over.
pub fn start(
    record: Result<supervisor::upgrade::State, String>,
    pid_file: Option<&Path>,
    image: supervisor::Image,
) -> ExitCode {
    use supervisor::upgrade::Purpose;
    match record {
        Ok(state) if state.purpose == Purpose::Check => check_take_over(state),
        Ok(state) => take_over(state, pid_file, image),
        Err(e) => {
            // (A record in another format: the check's answer too.)
            log::startup_error(format_args!(
                "cannot take over after an upgrade in place: {e}"
            ));
            ExitCode::from(EX_OSERR)
        }
    }
}

/// The upgrade's check: this binary, run with the arguments and the
/// environment it will be executed with, does with the carried
/// configuration what [`take_over`] does before it holds a descriptor
/// (but move into a cgroup), and says it would take over.
fn check_take_over(state: supervisor::upgrade::State) -> ExitCode {
    let cfg = match state.config.parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    sandbox::attached_before(&state.filters);
    if let Err((code, why)) = enter_sandbox_mode(&cfg, false) {
        eprintln!("{why}");
        return ExitCode::from(code);
    }
    say(format_args!(
        "{}: lbaws {VERSION} takes over from lbaws {} (format {})",
        supervisor::upgrade::PASSED,
        state.from_version,
        supervisor::upgrade::FORMAT
    ));
    ExitCode::SUCCESS
}

/// The image an upgrade in place executed: take over what the previous one
/// carried (see `supervisor::upgrade`). No binding, no daemonizing, no
/// privilege drop: all done already, by the same process. The check did
/// all this image does before it holds the carried descriptors, with the
/// same binary, arguments and configuration text: should one of these
/// steps fail all the same (the system changed meanwhile), the image
/// before takes over again ([`fall_back`]). After them, only memory for the
/// supervisor's tables can fail, which ends the process.
fn take_over(
    mut state: supervisor::upgrade::State,
    pid_file: Option<&Path>,
    mut image: supervisor::Image,
) -> ExitCode {
    use supervisor::upgrade::own;
    log::configure(config::Level::Info, config::LogTarget::Auto, state.daemon);
    let notifier = notify::Notifier::from_env();
    // The watchdog's clock carries across the exec: a ping at once.
    notifier.watchdog();
    if state.exe_fd >= 0 {
        drop(own(state.exe_fd)); // left open for a script (/dev/fd/N)
    }
    let back = state.previous.take().map(|p| (own(p.exe), p.text));
    image.exe = state.exe.clone();
    let cfg = match state.config.parse() {
        Ok(c) => c,
        Err(e) => return fall_back(state, back, &notifier, &image, e.to_string()),
    };
    log::configure(cfg.log.level, cfg.log.target, state.daemon);
    sys::raise_nofile();
    sandbox::attached_before(&state.filters);
    if let Err((_, why)) = enter_sandbox_mode(&cfg, true) {
        return fall_back(state, back, &notifier, &image, why);
    }
    let signal_fd = match signals::open() {
        Ok(s) => s,
        Err(e) => {
            let why = format!("cannot open signalfd: {e}");
            return fall_back(state, back, &notifier, &image, why);
        }
    };
    // From here on the carried descriptors are this image's.
    drop(back);
    let mut listeners = Vec::with_capacity(state.listeners.len());
    let mut taken = Vec::new();
    for l in &state.listeners {
        match listen::adopt(l.fd, l.inherited, l.name.clone(), &cfg.listen, &taken) {
            Ok(l) => {
                if let Some(spec) = &l.spec {
                    taken.push(spec.address.clone());
                }
                listeners.push(l);
            }
            Err(e) => crate::error!("after the upgrade: {e}"),
        }
    }
    if let Err(e) = log::configure_access(&cfg.log) {
        crate::error!("{e}; no access log");
    }
    http::warm_up(&cfg);
    alloc::reserve_worker_arena();
    listen::tune(&mut listeners, &cfg.limits);
    let daemon = state.daemon;
    let path = state.config.path.clone();
    let io = (listeners, signal_fd, notifier);
    let sup = match supervisor::Supervisor::resume(cfg, path, io, image, state) {
        Ok(s) => s,
        Err(e) => {
            crate::error!("cannot set up the supervisor after the upgrade: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    finish(sup.run(), daemon.then_some(pid_file).flatten())
}

/// The new image cannot take over (`why`): the image before does, from
/// the same record, with the configuration it ran (its binary was carried
/// open, even if the file was replaced); it says why the upgrade failed.
fn fall_back(
    mut state: supervisor::upgrade::State,
    back: Option<(std::os::fd::OwnedFd, String)>,
    notifier: &notify::Notifier,
    image: &supervisor::Image,
    why: String,
) -> ExitCode {
    use std::os::fd::AsFd;
    let Some((exe, text)) = back else {
        crate::error!("cannot take over after an upgrade in place: {why}");
        return ExitCode::from(EX_OSERR);
    };
    crate::error!(
        "cannot take over after an upgrade in place: {why}; back to lbaws {}, with the configuration it ran",
        state.from_version
    );
    state.fell_back = Some(format!("lbaws {VERSION} could not take over: {why}"));
    state.from_version = VERSION.into();
    state.config.text = text;
    state.exe_fd = -1;
    state.filters = sandbox::attached();
    notifier.watchdog();
    let e = supervisor::upgrade::execute(exe.as_fd(), &image.args, &state, notifier.env());
    crate::error!("cannot go back to the image before: {e}");
    ExitCode::from(EX_OSERR)
}
