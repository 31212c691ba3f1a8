//! The portal's pages, one module each, and what they share.

use std::time::Duration;

use leptos::prelude::*;

pub mod account;
pub mod agents;
pub mod audit;
pub mod experiments;
pub mod hosts;
pub mod jobs;
pub mod login;
pub mod plugins;
pub mod requests;
pub mod users;
pub mod vms;

/// A signal that ticks every `every` in the browser, and whether the page is hydrated. Effects
/// run only in the browser, so a server-rendered page neither polls nor claims to be live.
pub(crate) fn polling(every: Duration) -> (ReadSignal<u64>, ReadSignal<bool>) {
    let (tick, set_tick) = signal(0u64);
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| {
        set_hydrated.set(true);
        if let Ok(handle) = set_interval_with_handle(move || set_tick.update(|t| *t += 1), every) {
            on_cleanup(move || handle.clear());
        }
    });
    (tick, hydrated)
}
