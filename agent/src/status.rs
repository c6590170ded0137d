//! Component states (collectors and probes) and the HTML status page served at `/`.
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Active,
    Disabled,
    Failed(String),
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Active => "active",
            State::Disabled => "disabled",
            State::Failed(_) => "failed",
        }
    }
}

/// What the status page shows.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub collectors: Vec<(&'static str, State)>,
    /// (name, hooks, state)
    pub probes: Vec<(&'static str, &'static str, State)>,
}

impl Status {
    /// One line for the start-up log: counts per state and the failures with their reasons.
    pub fn summary(&self) -> String {
        let count = |states: &mut dyn Iterator<Item = &State>| {
            let (mut a, mut d, mut f) = (0, 0, 0);
            for s in states {
                match s {
                    State::Active => a += 1,
                    State::Disabled => d += 1,
                    State::Failed(_) => f += 1,
                }
            }
            format!("{a} active, {d} disabled, {f} failed")
        };
        let mut s = format!(
            "collectors: {}; probes: {}",
            count(&mut self.collectors.iter().map(|(_, s)| s)),
            count(&mut self.probes.iter().map(|(_, _, s)| s))
        );
        let failed = self
            .collectors
            .iter()
            .map(|(n, s)| (n, s))
            .chain(self.probes.iter().map(|(n, _, s)| (n, s)));
        for (n, st) in failed {
            if let State::Failed(r) = st {
                let _ = write!(s, "; {n} failed: {r}");
            }
        }
        s
    }

    pub fn html(&self, telemetry_path: &str, ready: bool) -> String {
        let mut h = String::with_capacity(4096);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>hostlens</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
             .active{{color:#080}}.failed{{color:#b00}}.disabled{{color:#888}}</style></head><body>\
             <h1>hostlens</h1><p>version {} (revision {}, {})</p>\
             <p><a href=\"{}\">Metrics</a> · <a href=\"/healthz\">healthz</a> · \
             <a href=\"/readyz\">readyz</a> ({})</p>",
            env!("CARGO_PKG_VERSION"),
            env!("HOSTLENS_REVISION"),
            escape(env!("HOSTLENS_RUSTC")),
            escape(telemetry_path),
            if ready { "ready" } else { "starting" }
        );
        h.push_str(
            "<h2>Collectors</h2><table><tr><th>collector</th><th>state</th><th>reason</th></tr>",
        );
        for (name, state) in &self.collectors {
            row(&mut h, &[name], state);
        }
        h.push_str("</table><h2>eBPF probes</h2><table><tr><th>probe</th><th>hooks</th><th>state</th><th>reason</th></tr>");
        for (name, hooks, state) in &self.probes {
            row(&mut h, &[name, hooks], state);
        }
        h.push_str("</table></body></html>\n");
        h
    }
}

fn row(h: &mut String, cells: &[&str], state: &State) {
    h.push_str("<tr>");
    for c in cells {
        let _ = write!(h, "<td>{}</td>", escape(c));
    }
    let reason = match state {
        State::Failed(r) => r.as_str(),
        _ => "",
    };
    let _ = write!(
        h,
        "<td class=\"{0}\">{0}</td><td>{1}</td></tr>",
        state.label(),
        escape(reason)
    );
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_lists_states_and_escapes_reasons() {
        let st = Status {
            collectors: vec![("loadavg", State::Active), ("meminfo", State::Disabled)],
            probes: vec![(
                "syscalls",
                "raw_tracepoint/sys_enter",
                State::Failed("<EPERM> & co".into()),
            )],
        };
        let h = st.html("/metrics", true);
        assert!(
            h.contains("<td>loadavg</td><td class=\"active\">active</td>"),
            "{h}"
        );
        assert!(h.contains("<td class=\"disabled\">disabled</td>"), "{h}");
        assert!(h.contains("&lt;EPERM&gt; &amp; co"), "{h}");
        assert!(!h.contains("<EPERM>"));
        assert_eq!(
            st.summary(),
            "collectors: 1 active, 1 disabled, 0 failed; probes: 0 active, 0 disabled, 1 failed; syscalls failed: <EPERM> & co"
        );
    }
}
