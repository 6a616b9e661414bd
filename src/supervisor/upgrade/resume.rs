//! The other end of an upgrade in place: the image that was executed takes
//! back what the previous one carried over (`record::State`).

use super::super::{gate_link, sources, workers, Channels, Counters, Supervisor};
use super::{own, worker_of, Image, State};
use crate::config::Config;
use crate::listen::Listener;
use crate::notify::Notifier;
use nix::errno::Errno;
use nix::sys::signalfd::SignalFd;
use std::path::PathBuf;
use std::time::Instant;

impl Supervisor {
    /// The supervisor of an image started by an upgrade in place: what the
    /// previous image carried over (`upgrade::State`) is taken back;
    /// its workers go on and are reaped here, its connections go to a new
    /// gate. Self-bound listeners follow the configuration as on a reload.
    pub fn resume(
        cfg: Config,
        cfg_path: Option<PathBuf>,
        io: (Vec<Listener>, SignalFd, Notifier),
        image: Image,
        state: State,
    ) -> Result<Supervisor, Errno> {
        if !crate::scoreboard::adopt(state.scoreboard) {
            return Err(Errno::ENOMEM);
        }
        crate::scoreboard::started();
        crate::scoreboard::add(crate::scoreboard::Sup::Upgrades, 1);
        let channels = Channels {
            stop_reader: own(state.stop_reader),
            stop_writer: (state.stop_writer >= 0).then(|| own(state.stop_writer)),
            park_rx: own(state.park_rx),
            park_tx: own(state.park_tx),
        };
        let carried_workers = state.workers.len();
        let mut sup = Supervisor::build(
            cfg,
            cfg_path,
            state.daemon,
            io,
            image,
            channels,
            carried_workers,
        )?;
        let now = Instant::now();
        let carried: Vec<workers::Worker> =
            state.workers.iter().map(|w| worker_of(w, now)).collect();
        for w in &carried {
            sup.sources.add(w.key, sources::Place::Worker);
        }
        sup.workers
            .adopt(&carried, state.next_slot, &state.free_slots);
        let [served, parked, lost] = state.counters;
        sup.counters = Counters {
            served,
            parked,
            proxy_refused: 0,
        };
        sup.lost_lines = lost;
        sup.spawn_gate();
        for c in &state.conns {
            let body = (c.file >= 0).then(|| {
                Box::new(gate_link::Attached {
                    file: own(c.file),
                    file2: (c.file2 >= 0).then(|| own(c.file2)),
                    spec: c.spec,
                })
            });
            sup.hand_to_gate(gate_link::Pending {
                conn: own(c.fd),
                meta: c.meta,
                key: crate::handoff::meta_key(&c.meta),
                body,
            });
        }
        let cfg = sup.cfg.clone();
        if let Err(e) = sup.follow_listeners(&cfg) {
            crate::error!("after the upgrade: {e}; serving on the listeners carried over");
        }
        match &state.fell_back {
            // The image executed could not take over: this one, the image
            // before, did again (see `upgraded::take_over`).
            Some(why) => {
                crate::error!(
                    "upgrade failed: {why}; lbaws {} serves again, with the configuration that ran before: {} worker(s) and {} connection(s) taken back",
                    crate::VERSION,
                    carried_workers,
                    state.conns.len()
                );
                sup.upgrade_error = Some(format!("upgrade failed: {why}"));
            }
            None => crate::info!(
                "upgraded in place from {} to {}: {} worker(s) and {} connection(s) taken over",
                state.from_version,
                crate::VERSION,
                carried_workers,
                state.conns.len()
            ),
        }
        Ok(sup)
    }
}
