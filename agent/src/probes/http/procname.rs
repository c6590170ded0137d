//! Bounded `process_name` label values for the HTTP families.
//!
//! Stand-in for the shared top-K process-name module (issue 6, `agent/src/procnames.rs`): the
//! first [`ProcNames::new`]`(max)` distinct names keep their own label, later ones share
//! `other`. Swap [`ProcNames::label`] for the shared module when it lands.
use std::collections::HashSet;

/// Label for names beyond the cap.
pub const OTHER: &str = "other";

#[derive(Debug)]
pub struct ProcNames {
    max: usize,
    kept: HashSet<String>,
}

impl ProcNames {
    pub fn new(max: usize) -> Self {
        ProcNames {
            max,
            kept: HashSet::new(),
        }
    }

    /// The label for a process name: itself while there is room, else `other`.
    pub fn label(&mut self, name: &str) -> String {
        if self.kept.contains(name) {
            return name.to_string();
        }
        if self.kept.len() < self.max {
            self.kept.insert(name.to_string());
            return name.to_string();
        }
        OTHER.to_string()
    }

    /// Forgets a name (its processes are gone), freeing room.
    pub fn forget(&mut self, name: &str) {
        self.kept.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_distinct_names() {
        let mut p = ProcNames::new(2);
        assert_eq!(p.label("nginx"), "nginx");
        assert_eq!(p.label("python3"), "python3");
        assert_eq!(p.label("curl"), OTHER);
        assert_eq!(p.label("nginx"), "nginx");
        p.forget("python3");
        assert_eq!(p.label("curl"), "curl");
    }
}
