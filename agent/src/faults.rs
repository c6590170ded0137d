//! Test hook for failure paths a healthy machine never takes — a bug met at run time:
//! `HOSTLENS_FAIL_PANIC` lists sites (comma-separated) where the agent panics as such a bug
//! would, so that tests can check that the panic costs only the part it hit. Unset (always,
//! outside tests) a check is a scan of an empty list.
//!
//! Sites:
//! - `collector:<name>`: every call of node collector `<name>`;
//! - `probe:<name>`: every scrape of probe `<name>`'s maps;
//! - `http_drain`: once, in the http probe's decoder, after the first record of a batch;
//! - `remote_write:<endpoint>`: once, in the endpoint's sender, with a batch in hand.
use std::sync::{Mutex, OnceLock};

/// The armed sites, read once.
fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("HOSTLENS_FAIL_PANIC")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Whether site `kind` (with `name`, when not empty: `kind:name`) is armed.
fn is_armed(kind: &str, name: &str) -> bool {
    armed().iter().any(|s| match s.split_once(':') {
        Some((k, n)) => k == kind && n == name,
        None => s == kind && name.is_empty(),
    })
}

/// Panics when site `kind:name` is armed.
pub fn panic_at(kind: &str, name: &str) {
    if is_armed(kind, name) {
        panic!("HOSTLENS_FAIL_PANIC: injected panic at {kind}:{name}");
    }
}

/// Panics the first time site `kind:name` is reached, when armed.
pub fn panic_once_at(kind: &str, name: &str) {
    static FIRED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if !is_armed(kind, name) {
        return;
    }
    let site = format!("{kind}:{name}");
    {
        let mut fired = FIRED.lock().unwrap_or_else(|e| e.into_inner());
        if fired.contains(&site) {
            return;
        }
        fired.push(site.clone());
    }
    panic!("HOSTLENS_FAIL_PANIC: injected panic at {site}");
}
