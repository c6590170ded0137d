//! Test hooks for failure paths a healthy machine never takes, each a comma-separated list in
//! an environment variable, read once (unset, always outside tests, a check is a scan of an
//! empty list):
//! - `HOSTLENS_FAIL_ATTACH`: eBPF programs whose attach is refused as if by the kernel, for
//!   the fallbacks a kernel that has every hook never takes ([`attach_refused`]);
//! - `HOSTLENS_FAIL_PANIC`: sites where the agent panics as a bug met at run time would, so
//!   that tests can check that the panic costs only the part it hit.
//! - `HOSTLENS_FORCE`: paths this machine would not take, taken anyway ([`forced`]):
//!   `http_shared_rings`, the http probe's reading of rings shared by several CPUs (machines
//!   with more CPUs than rings).
//!
//! Panic sites:
//! - `collector:<name>`: every call of node collector `<name>`;
//! - `probe:<name>`: every scrape of probe `<name>`'s maps;
//! - `http_drain`: once, in the http probe's decoder, after the first record of a batch;
//! - `remote_write:<endpoint>`: once, in the endpoint's sender, with a batch in hand.
use std::sync::{Mutex, OnceLock};

/// The comma-separated entries of environment variable `var`, read once into `cell`.
fn listed(cell: &'static OnceLock<Vec<String>>, var: &str) -> &'static [String] {
    cell.get_or_init(|| {
        std::env::var(var)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Whether `HOSTLENS_FAIL_ATTACH` names eBPF program `program`.
pub fn attach_refused(program: &str) -> bool {
    static REFUSED: OnceLock<Vec<String>> = OnceLock::new();
    listed(&REFUSED, "HOSTLENS_FAIL_ATTACH")
        .iter()
        .any(|n| n == program)
}

/// Whether `HOSTLENS_FORCE` names path `name`.
pub fn forced(name: &str) -> bool {
    static FORCED: OnceLock<Vec<String>> = OnceLock::new();
    listed(&FORCED, "HOSTLENS_FORCE").iter().any(|n| n == name)
}

/// The armed panic sites.
fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    listed(&ARMED, "HOSTLENS_FAIL_PANIC")
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
