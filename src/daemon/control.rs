//! How the outside world steers a running daemon: stop (SIGTERM, SIGINT) and reload (SIGHUP), as
//! channels the main loop selects on beside its timers, so a signal wakes it at once and nothing
//! polls a flag.
//!
//! `Control` is a parameter of `daemon::run`: tests and `demo` pass one they hold (or `none()`),
//! `run`/`once` pass `from_signals()`, whose thread turns signals into messages.

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

pub struct Control {
    pub stop: Receiver<()>,
    pub reload: Receiver<()>,
    /// keeps the channels open when nobody else can send (`none`)
    _keep: Option<(Sender<()>, Sender<()>)>,
}

impl Control {
    /// Channels nobody sends on: the daemon runs until drained (`once`).
    pub fn none() -> Control {
        let (stop_tx, stop) = bounded(1);
        let (reload_tx, reload) = bounded(1);
        Control {
            stop,
            reload,
            _keep: Some((stop_tx, reload_tx)),
        }
    }

    /// A control and the senders that steer it (tests, embedding).
    pub fn manual() -> (Control, Sender<()>, Sender<()>) {
        let (stop_tx, stop) = unbounded();
        let (reload_tx, reload) = unbounded();
        let c = Control {
            stop,
            reload,
            _keep: None,
        };
        (c, stop_tx, reload_tx)
    }

    /// SIGTERM and SIGINT stop, SIGHUP reloads; a thread of signal-hook's forwards them.
    pub fn from_signals() -> std::io::Result<Control> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let (control, stop_tx, reload_tx) = Control::manual();
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let to = if sig == SIGHUP { &reload_tx } else { &stop_tx };
                    if to.send(()).is_err() {
                        return; // the daemon is gone
                    }
                }
            })?;
        Ok(control)
    }
}
