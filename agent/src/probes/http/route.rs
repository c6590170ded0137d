//! `http_route` from a request target, with bounded cardinality.
//!
//! 1. The query (`?…`) and fragment are stripped; an absolute-form target keeps its path.
//! 2. A configured template (`/api/v1/users/{id}`) that matches segment by segment wins and is
//!    the route verbatim (`{name}` matches one segment).
//! 3. Otherwise each segment that looks like an id becomes `*`: all digits, hex of 8+
//!    characters with a digit, UUID-like, longer than [`MAX_SEGMENT`], or not plain visible
//!    ASCII (non-UTF-8, control bytes).
//! 4. Per position: once a parent route has seen more than `max_values` distinct child
//!    segments, every child under it becomes `*` (`/users/alice`, `/users/bob`, … →
//!    `/users/*`). The table of parents is itself capped; past the cap, new parents collapse.
//! 5. At most [`MAX_DEPTH`] segments are kept; deeper paths end in `/…`.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

/// Longest segment kept verbatim.
pub const MAX_SEGMENT: usize = 64;
/// Segments kept; a deeper path ends in `/…`.
pub const MAX_DEPTH: usize = 12;
/// Parent routes whose children are tracked for per-position collapse.
pub const MAX_PARENTS: usize = 4096;
/// Paths remembered with their route (keep-alive clients repeat the same few targets).
const CACHE_ENTRIES: usize = 4096;
/// Longest path remembered, so the cache stays within about 1 MiB.
const CACHE_PATH_MAX: usize = 256;

#[derive(Debug)]
struct Template {
    route: String,
    segments: Vec<Option<String>>,
}

#[derive(Debug)]
pub struct Router {
    templates: Vec<Template>,
    max_values: usize,
    /// Parent route -> its distinct children (None once collapsed).
    children: HashMap<String, Option<HashSet<String>>>,
    /// Path -> route, valid until a position collapses (then cleared).
    cache: HashMap<Box<[u8]>, Arc<str>, foldhash::fast::RandomState>,
    /// Bumped when a position collapses: a route remembered under an older generation may
    /// have changed.
    generation: u64,
}

impl Router {
    /// `templates`: routes like `/api/v1/users/{id}`; `max_values`: distinct values a segment
    /// position may take before it collapses to `*`.
    pub fn new(templates: &[String], max_values: usize) -> Router {
        let templates = templates
            .iter()
            .map(|t| Template {
                route: t.clone(),
                segments: split(t.as_bytes())
                    .map(|s| {
                        let s = String::from_utf8_lossy(s);
                        (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.into_owned())
                    })
                    .collect(),
            })
            .collect();
        Router {
            templates,
            max_values,
            children: HashMap::new(),
            cache: HashMap::default(),
            generation: 0,
        }
    }

    /// Changes whenever the route of a path seen before may have changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The route of a request target. A path seen before gets its route from the cache:
    /// its segments are already in the per-position tables, so computing it again would give
    /// the same route unless a position collapsed since, which clears the cache.
    pub fn route(&mut self, target: &[u8]) -> Arc<str> {
        let path = path_of(target);
        if let Some(r) = self.cache.get(path) {
            return Arc::clone(r);
        }
        let route: Arc<str> = Arc::from(self.compute(path));
        if path.len() <= CACHE_PATH_MAX {
            if self.cache.len() >= CACHE_ENTRIES {
                self.cache.clear();
            }
            self.cache.insert(Box::from(path), Arc::clone(&route));
        }
        route
    }

    fn compute(&mut self, path: &[u8]) -> String {
        if path == b"*" {
            return "*".into();
        }
        let segs: Vec<&[u8]> = split(path).collect();
        for t in &self.templates {
            if t.segments.len() == segs.len()
                && t.segments.iter().zip(&segs).all(|(want, got)| match want {
                    None => !got.is_empty(),
                    Some(w) => w.as_bytes() == *got,
                })
            {
                return t.route.clone();
            }
        }
        let mut route = String::with_capacity(path.len().min(256));
        for (i, seg) in segs.iter().enumerate() {
            if i == MAX_DEPTH {
                route.push_str("/…");
                break;
            }
            let norm = if is_id_like(seg) {
                "*".to_string()
            } else {
                // is_id_like rejected non-ASCII, so this is plain text.
                String::from_utf8_lossy(seg).into_owned()
            };
            let parent_len = route.len();
            let child = self.position(&route[..parent_len], norm);
            route.push('/');
            route.push_str(&child);
        }
        if route.is_empty() || path.ends_with(b"/") && !route.ends_with("/…") {
            route.push('/');
        }
        route
    }

    /// Applies per-position collapse to `child` under `parent`.
    fn position(&mut self, parent: &str, child: String) -> String {
        if child == "*" {
            return child;
        }
        match self.children.get_mut(parent) {
            Some(None) => "*".into(),
            Some(Some(set)) => {
                if set.contains(&child) {
                    return child;
                }
                if set.len() >= self.max_values {
                    self.children.insert(parent.to_string(), None);
                    self.cache.clear();
                    self.generation += 1;
                    return "*".into();
                }
                set.insert(child.clone());
                child
            }
            None => {
                if self.children.len() >= MAX_PARENTS {
                    return "*".into();
                }
                self.children
                    .insert(parent.to_string(), Some(HashSet::from([child.clone()])));
                child
            }
        }
    }
}

/// The path of a target: origin-form as is, absolute-form without scheme and authority;
/// query and fragment removed.
fn path_of(target: &[u8]) -> &[u8] {
    let mut t = target;
    if let Some(i) = find(t, b"://") {
        let after = &t[i + 3..];
        t = match after.iter().position(|b| *b == b'/') {
            Some(j) => &after[j..],
            None => b"/",
        };
    }
    let end = t
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(t.len());
    &t[..end]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/').filter(|s| !s.is_empty())
}

fn is_id_like(seg: &[u8]) -> bool {
    if seg.len() > MAX_SEGMENT || seg.iter().any(|b| !(0x21..0x7f).contains(b)) {
        return true;
    }
    if seg.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let hexish = |s: &[u8]| s.iter().all(u8::is_ascii_hexdigit);
    if seg.len() >= 8 && hexish(seg) && seg.iter().any(u8::is_ascii_digit) {
        return true;
    }
    // UUID-like: 8-4-4-4-12 hex groups.
    let groups: Vec<&[u8]> = seg.split(|b| *b == b'-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && hexish(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(router: &mut Router, t: &str) -> String {
        router.route(t.as_bytes()).to_string()
    }

    #[test]
    fn strips_query_and_collapses_ids() {
        let mut ro = Router::new(&[], 50);
        assert_eq!(r(&mut ro, "/users/123?x=1"), "/users/*");
        assert_eq!(r(&mut ro, "/"), "/");
        assert_eq!(r(&mut ro, "/a/b/"), "/a/b/");
        assert_eq!(
            r(&mut ro, "/o/550e8400-e29b-41d4-a716-446655440000/x"),
            "/o/*/x"
        );
        assert_eq!(r(&mut ro, "/blob/deadbeef12"), "/blob/*");
        assert_eq!(r(&mut ro, "/api/v1/cafe"), "/api/v1/cafe");
        assert_eq!(r(&mut ro, "http://host:8080/p/7?q"), "/p/*");
        assert_eq!(r(&mut ro, "*"), "*");
        assert_eq!(&*ro.route(b"/n/\xff\xfe/x"), "/n/*/x");
        let long = format!("/{}", "a".repeat(65536));
        assert_eq!(r(&mut ro, &long), "/*");
    }

    #[test]
    fn templates_win() {
        let mut ro = Router::new(&["/api/v1/users/{id}".into()], 50);
        assert_eq!(r(&mut ro, "/api/v1/users/alice"), "/api/v1/users/{id}");
        assert_eq!(r(&mut ro, "/api/v1/users/alice/x"), "/api/v1/users/alice/x");
    }

    #[test]
    fn per_position_collapse_bounds_children() {
        let mut ro = Router::new(&[], 10);
        for i in 0..10 {
            assert_eq!(
                r(&mut ro, &format!("/names/n{i}x")),
                format!("/names/n{i}x")
            );
        }
        assert_eq!(r(&mut ro, "/names/eleventh"), "/names/*");
        assert_eq!(r(&mut ro, "/names/n1x"), "/names/*");
        let distinct: HashSet<String> = (0..100_000)
            .map(|i| r(&mut ro, &format!("/w{i}/leaf")))
            .collect();
        assert!(distinct.len() <= 11, "{}", distinct.len());
        assert!(ro.children.len() <= MAX_PARENTS);
        assert!(ro.cache.len() <= CACHE_ENTRIES);
        // A path routed before a collapse is not served its old route from the cache.
        let mut ro = Router::new(&[], 3);
        assert_eq!(r(&mut ro, "/k/a"), "/k/a");
        assert_eq!(r(&mut ro, "/k/a"), "/k/a");
        for c in ["b", "c", "d"] {
            r(&mut ro, &format!("/k/{c}"));
        }
        assert_eq!(r(&mut ro, "/k/a"), "/k/*");
    }

    #[test]
    fn depth_is_capped() {
        let mut ro = Router::new(&[], 50);
        let deep = "/a".repeat(100);
        assert_eq!(r(&mut ro, &deep).matches('/').count(), MAX_DEPTH + 1);
    }
}
