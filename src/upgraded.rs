//! The start of an image that an upgrade in place executed
//! (`supervisor::upgrade`, which has the whole story). `main` sends a
//! server start here when the environment names an upgrade record.

use super::{finish, loop_io, EX_OSERR};
use crate::{config::Config, listen, log, notify, supervisor, sys};
use std::path::Path;
use std::process::ExitCode;

/// The image an upgrade in place started: take over what the previous one
/// carried (see `upgrade`). No binding, no daemonizing, no privilege drop:
/// all done already, by the same process. A failure here can only be
/// logged: the previous image is gone.
pub fn take_over(
    cfg: Config,
    path: Option<std::path::PathBuf>,
    state: Result<supervisor::upgrade::State, String>,
    pid_file: Option<&Path>,
    image: supervisor::Image,
) -> ExitCode {
    let daemon = state.as_ref().is_ok_and(|s| s.daemon);
    log::configure(cfg.log.level, cfg.log.target, daemon);
    let state = match state {
        Ok(s) => s,
        Err(e) => {
            crate::error!("cannot take over after an upgrade in place: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    let notifier = notify::Notifier::from_env();
    // The watchdog's clock carries across the exec: a ping at once (the
    // regular ones start from READY=1, which pings too).
    notifier.watchdog();
    sys::raise_nofile();
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
    if let Err(e) = log::configure_access(&cfg.log.access) {
        crate::error!("{e}; no access log");
    }
    // The filters the images before attached stay: none twice.
    crate::sandbox::attached_before(&state.filters);
    let io = match loop_io(&cfg, listeners, notifier) {
        Ok(io) => io,
        Err(code) => return code,
    };
    let sup = match supervisor::Supervisor::resume(cfg, path, io, image, state) {
        Ok(s) => s,
        Err(e) => {
            crate::error!("cannot set up the supervisor after the upgrade: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    finish(sup.run(), daemon.then_some(pid_file).flatten())
}
