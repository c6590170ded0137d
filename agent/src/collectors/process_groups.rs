//! `process_groups`: process-exporter's per-group families from procfs. Reads, for every
//! `<procfs>/<pid>`: `stat`, `status`, `io`, `fd/`, `limits`, `smaps_rollup`, `cmdline`,
//! `exe`; and `<procfs>/stat` (`btime`). Produces, labelled `groupname`:
//! `namedprocess_namegroup_{num_procs,num_threads,open_filedesc,worst_fd_ratio,
//! oldest_start_time_seconds}`, `_cpu_seconds_total{mode}`, `_memory_bytes{memtype}`,
//! `_read_bytes_total`, `_write_bytes_total`, `_major_page_faults_total`,
//! `_minor_page_faults_total`, `_context_switches_total{ctxswitchtype}`, `_states{state}`.
//!
//! Grouping: the first matcher (YAML `process_groups.matchers`, process-exporter's `comm`,
//! `exe`, `cmdline` and `name` template) that matches names the group; without matchers every
//! user-space process is grouped by its executable's base name. Counters of a group stay
//! monotonic when members exit: the last values of a gone process are kept in the group.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
};

use regex::Regex;
use serde::Deserialize;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, read_file};
use crate::emit::{Kind, Out};

/// One `process_groups.matchers` entry, as process-exporter's `process_names` entries.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatcherConfig {
    /// Group name template: `{{.Comm}}`, `{{.ExeBase}}`, `{{.ExeFull}}`,
    /// `{{.Matches.<capture>}}` (named captures of the cmdline regexes). Default `{{.ExeBase}}`.
    pub name: Option<String>,
    /// Any of these equals the process's comm.
    pub comm: Vec<String>,
    /// Any of these equals the executable's path (or its base name, for entries without '/').
    pub exe: Vec<String>,
    /// Every one of these regexes matches the command line (arguments joined by spaces).
    pub cmdline: Vec<String>,
}

/// `process_groups:` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessGroupsConfig {
    pub matchers: Vec<MatcherConfig>,
}

const PLACEHOLDERS: [&str; 3] = ["{{.Comm}}", "{{.ExeBase}}", "{{.ExeFull}}"];

/// A compiled matcher.
#[derive(Debug)]
struct Matcher {
    name: String,
    comm: Vec<String>,
    exe: Vec<String>,
    cmdline: Vec<Regex>,
}

impl ProcessGroupsConfig {
    /// Compiles the matchers; errors name the entry and field, e.g. `matchers[1].cmdline[0]`.
    fn compile(&self) -> Result<Vec<Matcher>, (String, String)> {
        let mut out = Vec::new();
        for (i, m) in self.matchers.iter().enumerate() {
            if m.comm.is_empty() && m.exe.is_empty() && m.cmdline.is_empty() {
                return Err((
                    format!("matchers[{i}]"),
                    "needs at least one of comm, exe, cmdline".into(),
                ));
            }
            let mut cmdline = Vec::new();
            for (j, r) in m.cmdline.iter().enumerate() {
                cmdline.push(
                    Regex::new(r)
                        .map_err(|e| (format!("matchers[{i}].cmdline[{j}]"), e.to_string()))?,
                );
            }
            let name = m.name.clone().unwrap_or_else(|| "{{.ExeBase}}".into());
            // Every {{...}} must be a known placeholder or a named capture of this matcher.
            let mut rest = name.as_str();
            while let Some(start) = rest.find("{{") {
                let end = rest[start..].find("}}").ok_or_else(|| {
                    (
                        format!("matchers[{i}].name"),
                        format!("unclosed {{{{ in {name:?}"),
                    )
                })? + start
                    + 2;
                let ph = &rest[start..end];
                let known = PLACEHOLDERS.contains(&ph)
                    || ph
                        .strip_prefix("{{.Matches.")
                        .and_then(|c| c.strip_suffix("}}"))
                        .is_some_and(|c| {
                            cmdline
                                .iter()
                                .any(|r| r.capture_names().flatten().any(|n| n == c))
                        });
                if !known {
                    return Err((
                        format!("matchers[{i}].name"),
                        format!(
                            "unknown placeholder {ph}; use {}, or {{{{.Matches.<name>}}}} of a \
                             named capture in cmdline",
                            PLACEHOLDERS.join(", ")
                        ),
                    ));
                }
                rest = &rest[end..];
            }
            out.push(Matcher {
                name,
                comm: m.comm.clone(),
                exe: m.exe.clone(),
                cmdline,
            });
        }
        Ok(out)
    }

    /// Checks the matchers; `Err((key below process_groups, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.compile().map(|_| ())
    }
}

/// What a process is matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub comm: String,
    pub exe: String,
    pub cmdline: Vec<String>,
}

fn base(path: &str) -> &str {
    // The kernel appends " (deleted)" to the link of a replaced executable.
    let p = path.strip_suffix(" (deleted)").unwrap_or(path);
    p.rsplit('/').next().unwrap_or(p)
}

/// The group name of a process, or None when no matcher takes it.
fn group_of(matchers: &[Matcher], id: &Identity) -> Option<String> {
    if matchers.is_empty() {
        // Default: user-space processes (kernel threads have no command line) by executable.
        if id.cmdline.is_empty() {
            return None;
        }
        let b = base(&id.exe);
        return Some(if b.is_empty() {
            id.comm.clone()
        } else {
            b.into()
        });
    }
    let joined = id.cmdline.join(" ");
    'matchers: for m in matchers {
        if !m.comm.is_empty() && !m.comm.contains(&id.comm) {
            continue;
        }
        if !m.exe.is_empty()
            && !m.exe.iter().any(|e| {
                if e.contains('/') {
                    *e == id.exe
                } else {
                    e == base(&id.exe)
                }
            })
        {
            continue;
        }
        let mut captures: HashMap<String, String> = HashMap::new();
        for r in &m.cmdline {
            let Some(c) = r.captures(&joined) else {
                continue 'matchers;
            };
            for n in r.capture_names().flatten() {
                if let Some(v) = c.name(n) {
                    captures.insert(n.to_string(), v.as_str().to_string());
                }
            }
        }
        let mut name = m
            .name
            .replace("{{.Comm}}", &id.comm)
            .replace("{{.ExeBase}}", base(&id.exe))
            .replace("{{.ExeFull}}", &id.exe);
        for (k, v) in &captures {
            name = name.replace(&format!("{{{{.Matches.{k}}}}}"), v);
        }
        return Some(name);
    }
    None
}

/// Fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stat {
    pub state: char,
    pub minflt: u64,
    pub majflt: u64,
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub starttime_ticks: u64,
}

/// Parses `/proc/<pid>/stat`; the comm (field 2) may hold spaces and parentheses, so fields
/// are counted from the last ')'.
pub fn parse_stat(text: &str) -> Result<(String, Stat), LineError> {
    let open = text
        .find('(')
        .ok_or_else(|| LineError::new(1, "no '(' before comm"))?;
    let close = text
        .rfind(')')
        .ok_or_else(|| LineError::new(1, "no ')' after comm"))?;
    if close < open {
        return Err(LineError::new(1, "the last ')' comes before the first '('"));
    }
    let comm = text[open + 1..close].to_string();
    let f: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let num = |n: usize, what: &str| -> Result<u64, LineError> {
        f.get(n - 3)
            .ok_or_else(|| LineError::new(1, format!("missing field {n} ({what})")))?
            .parse::<u64>()
            .map_err(|_| LineError::new(1, format!("field {n} ({what}) is not a number")))
    };
    let state = f
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| LineError::new(1, "missing field 3 (state)"))?;
    Ok((
        comm,
        Stat {
            state,
            minflt: num(10, "minflt")?,
            majflt: num(12, "majflt")?,
            utime_ticks: num(14, "utime")?,
            stime_ticks: num(15, "stime")?,
            starttime_ticks: num(22, "starttime")?,
        },
    ))
}

/// Fields of `/proc/<pid>/status` used here (memory in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Status {
    pub threads: u64,
    pub vm_rss: u64,
    pub vm_size: u64,
    pub vm_swap: u64,
    pub voluntary: u64,
    pub nonvoluntary: u64,
}

/// `Key:   value [kB]` lines into a map of values (kB converted to bytes).
fn key_values(text: &str) -> Result<HashMap<&str, u64>, LineError> {
    let mut m = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let (num, mult) = match v.strip_suffix(" kB") {
            Some(n) => (n.trim(), 1024),
            None => (v, 1),
        };
        // Non-numeric fields (Name, State, masks lists) are not used.
        if let Ok(n) = num.parse::<u64>() {
            m.insert(k.trim(), n.saturating_mul(mult));
        } else if k.trim() == "Threads" {
            return Err(LineError::new(
                i + 1,
                format!("Threads: {v:?} is not a number"),
            ));
        }
    }
    Ok(m)
}

pub fn parse_status(text: &str) -> Result<Status, LineError> {
    let m = key_values(text)?;
    let g = |k: &str| m.get(k).copied().unwrap_or(0);
    Ok(Status {
        threads: g("Threads"),
        vm_rss: g("VmRSS"),
        vm_size: g("VmSize"),
        vm_swap: g("VmSwap"),
        voluntary: g("voluntary_ctxt_switches"),
        nonvoluntary: g("nonvoluntary_ctxt_switches"),
    })
}

/// `(read_bytes, write_bytes)` of `/proc/<pid>/io`.
pub fn parse_io(text: &str) -> Result<(u64, u64), LineError> {
    let m = key_values(text)?;
    Ok((
        m.get("read_bytes").copied().unwrap_or(0),
        m.get("write_bytes").copied().unwrap_or(0),
    ))
}

/// Soft limit of "Max open files" in `/proc/<pid>/limits` (None when unlimited).
pub fn parse_limits_nofile(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `Pss:` of `/proc/<pid>/smaps_rollup`, in bytes.
pub fn parse_pss(text: &str) -> Result<u64, LineError> {
    Ok(key_values(text)?.get("Pss").copied().unwrap_or(0))
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
pub fn parse_btime(text: &str) -> Result<u64, LineError> {
    for (i, line) in text.lines().enumerate() {
        if let Some(v) = line.strip_prefix("btime ") {
            return v
                .trim()
                .parse()
                .map_err(|_| LineError::new(i + 1, format!("btime {v:?} is not a number")));
        }
    }
    Err(LineError::new(1, "no btime line"))
}

/// Counters of one process that must stay monotonic per group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counters {
    utime_ticks: u64,
    stime_ticks: u64,
    read_bytes: u64,
    write_bytes: u64,
    majflt: u64,
    minflt: u64,
    voluntary: u64,
    nonvoluntary: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.utime_ticks = self.utime_ticks.saturating_add(o.utime_ticks);
        self.stime_ticks = self.stime_ticks.saturating_add(o.stime_ticks);
        self.read_bytes = self.read_bytes.saturating_add(o.read_bytes);
        self.write_bytes = self.write_bytes.saturating_add(o.write_bytes);
        self.majflt = self.majflt.saturating_add(o.majflt);
        self.minflt = self.minflt.saturating_add(o.minflt);
        self.voluntary = self.voluntary.saturating_add(o.voluntary);
        self.nonvoluntary = self.nonvoluntary.saturating_add(o.nonvoluntary);
    }
}

/// One live process as read this scrape.
#[derive(Debug, Clone, Default)]
struct Proc {
    counters: Counters,
    threads: u64,
    rss: u64,
    vsize: u64,
    swap: u64,
    pss: u64,
    fds: u64,
    fd_limit: Option<u64>,
    start_ticks: u64,
    state: char,
}

/// Per-group sums written out.
#[derive(Debug, Default)]
struct Group {
    procs: u64,
    live: Counters,
    threads: u64,
    rss: u64,
    vsize: u64,
    swap: u64,
    pss: u64,
    fds: u64,
    worst_fd_ratio: f64,
    oldest_start_ticks: Option<u64>,
    states: BTreeMap<&'static str, u64>,
}

/// process-exporter's state names.
fn state_name(c: char) -> &'static str {
    match c {
        'R' => "Running",
        'S' => "Sleeping",
        'D' => "Waiting",
        'Z' => "Zombie",
        _ => "Other",
    }
}

/// Processes seen last scrape, keyed by (pid, start time) so that a reused pid is a new
/// process: their group and last counters.
type Seen = HashMap<(u32, u64), (String, Counters)>;

#[derive(Debug, Default)]
struct Memory {
    seen: Seen,
    /// Counters of exited members, per group.
    gone: HashMap<String, Counters>,
}

#[derive(Debug)]
pub struct ProcessGroups {
    procfs: PathBuf,
    matchers: Vec<Matcher>,
    ticks_per_second: f64,
    memory: Mutex<Memory>,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let matchers = ctx.process_groups.compile().map_err(|(key, msg)| {
        CollectorError::parse(Path::new("process_groups"), 0, format!("{key}: {msg}"))
    })?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(Box::new(ProcessGroups {
        procfs: ctx.paths.procfs.clone(),
        matchers,
        ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
        memory: Mutex::new(Memory::default()),
    }))
}

/// A file of a process that may vanish (or deny access) at any moment: None then. Bytes that
/// are not UTF-8 (a comm or an argument in another encoding) are replaced, so such a process
/// is still counted.
fn read_opt(path: &Path) -> Option<String> {
    fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

impl ProcessGroups {
    /// Reads one process; None when it vanished meanwhile or is not grouped.
    fn read_proc(&self, dir: &Path) -> Result<Option<(String, Proc)>, CollectorError> {
        let stat_path = dir.join("stat");
        let Some(stat_text) = read_opt(&stat_path) else {
            return Ok(None);
        };
        let (comm, stat) = parse_stat(&stat_text).map_err(|e| e.at(&stat_path))?;
        let cmdline: Vec<String> = read_opt(&dir.join("cmdline"))
            .unwrap_or_default()
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let exe = fs::read_link(dir.join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = Identity { comm, exe, cmdline };
        let Some(group) = group_of(&self.matchers, &id) else {
            return Ok(None);
        };
        let status_path = dir.join("status");
        let Some(status_text) = read_opt(&status_path) else {
            return Ok(None);
        };
        let status = parse_status(&status_text).map_err(|e| e.at(&status_path))?;
        let io_path = dir.join("io");
        let (read_bytes, write_bytes) = match read_opt(&io_path) {
            Some(t) => parse_io(&t).map_err(|e| e.at(&io_path))?,
            None => (0, 0),
        };
        let fds = fs::read_dir(dir.join("fd")).map_or(0, |d| d.count() as u64);
        let fd_limit = read_opt(&dir.join("limits")).and_then(|t| parse_limits_nofile(&t));
        let smaps = dir.join("smaps_rollup");
        let pss = match read_opt(&smaps) {
            Some(t) => parse_pss(&t).map_err(|e| e.at(&smaps))?,
            None => 0,
        };
        Ok(Some((
            group,
            Proc {
                counters: Counters {
                    utime_ticks: stat.utime_ticks,
                    stime_ticks: stat.stime_ticks,
                    read_bytes,
                    write_bytes,
                    majflt: stat.majflt,
                    minflt: stat.minflt,
                    voluntary: status.voluntary,
                    nonvoluntary: status.nonvoluntary,
                },
                threads: status.threads,
                rss: status.vm_rss,
                vsize: status.vm_size,
                swap: status.vm_swap,
                pss,
                fds,
                fd_limit,
                start_ticks: stat.starttime_ticks,
                state: stat.state,
            },
        )))
    }
}

impl NodeCollector for ProcessGroups {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let stat_path = self.procfs.join("stat");
        let btime = parse_btime(&read_file(&stat_path)?).map_err(|e| e.at(&stat_path))?;
        let entries = fs::read_dir(&self.procfs).map_err(|source| CollectorError::Io {
            path: self.procfs.clone(),
            source,
        })?;
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut now_seen: Seen = HashMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some((group, p)) = self.read_proc(&entry.path())? else {
                continue;
            };
            now_seen.insert((pid, p.start_ticks), (group.clone(), p.counters));
            let g = groups.entry(group).or_default();
            g.procs += 1;
            g.live.add(&p.counters);
            g.threads = g.threads.saturating_add(p.threads);
            g.rss = g.rss.saturating_add(p.rss);
            g.vsize = g.vsize.saturating_add(p.vsize);
            g.swap = g.swap.saturating_add(p.swap);
            g.pss = g.pss.saturating_add(p.pss);
            g.fds = g.fds.saturating_add(p.fds);
            if let Some(limit) = p.fd_limit.filter(|l| *l > 0) {
                g.worst_fd_ratio = g.worst_fd_ratio.max(p.fds as f64 / limit as f64);
            }
            g.oldest_start_ticks = Some(
                g.oldest_start_ticks
                    .map_or(p.start_ticks, |o| o.min(p.start_ticks)),
            );
            *g.states.entry(state_name(p.state)).or_default() += 1;
        }
        let mut mem = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let mem = &mut *mem;
        // Members gone since the last scrape leave their last counters in their group.
        // A process that changed group (exec of another program) left its old group too.
        let gone_now: Vec<(String, Counters)> = mem
            .seen
            .iter()
            .filter(|(k, (g, _))| now_seen.get(*k).is_none_or(|(ng, _)| ng != g))
            .map(|(_, v)| v.clone())
            .collect();
        for (group, c) in gone_now {
            mem.gone.entry(group).or_default().add(&c);
        }
        // A group with no live member keeps its totals only as long as it is known; its
        // series stop when the last member exits, as in process-exporter.
        let live: HashSet<&String> = groups.keys().collect();
        mem.gone.retain(|g, _| live.contains(g));
        mem.seen = now_seen;

        let totals: BTreeMap<&String, Counters> = groups
            .iter()
            .map(|(name, g)| {
                let mut c = g.live;
                if let Some(d) = mem.gone.get(name) {
                    c.add(d);
                }
                (name, c)
            })
            .collect();
        let t = self.ticks_per_second;
        let gauge = |out: &mut Out<'_, '_>, name: &str, help: &str, f: &dyn Fn(&Group) -> f64| {
            let mut fam = out.family(name, help, Kind::Gauge)?;
            for (gname, g) in &groups {
                fam.sample(&[("groupname", gname.as_str())], f(g))?;
            }
            Ok::<(), std::fmt::Error>(())
        };
        let counter =
            |out: &mut Out<'_, '_>, name: &str, help: &str, f: &dyn Fn(&Counters) -> f64| {
                let mut fam = out.family(name, help, Kind::Counter)?;
                for (gname, c) in &totals {
                    fam.sample(&[("groupname", gname.as_str())], f(c))?;
                }
                Ok::<(), std::fmt::Error>(())
            };
        gauge(
            out,
            "namedprocess_namegroup_num_procs",
            "number of processes in this group",
            &|g| g.procs as f64,
        )?;
        gauge(
            out,
            "namedprocess_namegroup_num_threads",
            "Number of threads",
            &|g| g.threads as f64,
        )?;
        let mut fam = out.family(
            "namedprocess_namegroup_cpu_seconds_total",
            "Cpu user usage in seconds",
            Kind::Counter,
        )?;
        for (gname, c) in &totals {
            fam.sample(
                &[("groupname", gname.as_str()), ("mode", "system")],
                c.stime_ticks as f64 / t,
            )?;
            fam.sample(
                &[("groupname", gname.as_str()), ("mode", "user")],
                c.utime_ticks as f64 / t,
            )?;
        }
        drop(fam);
        let mut fam = out.family(
            "namedprocess_namegroup_memory_bytes",
            "number of bytes of memory in use",
            Kind::Gauge,
        )?;
        for (gname, g) in &groups {
            for (memtype, v) in [
                ("proportionalResident", g.pss),
                ("resident", g.rss),
                ("swapped", g.swap),
                ("virtual", g.vsize),
            ] {
                fam.sample(
                    &[("groupname", gname.as_str()), ("memtype", memtype)],
                    v as f64,
                )?;
            }
        }
        drop(fam);
        gauge(
            out,
            "namedprocess_namegroup_open_filedesc",
            "number of open file descriptors for this group",
            &|g| g.fds as f64,
        )?;
        gauge(
            out,
            "namedprocess_namegroup_worst_fd_ratio",
            "the worst (closest to 1) ratio between open fds and max fds among all procs in this group",
            &|g| g.worst_fd_ratio,
        )?;
        gauge(
            out,
            "namedprocess_namegroup_oldest_start_time_seconds",
            "start time in seconds since 1970/01/01 of oldest process in group",
            &|g| {
                g.oldest_start_ticks
                    .map_or(0.0, |s| btime as f64 + s as f64 / t)
            },
        )?;
        counter(
            out,
            "namedprocess_namegroup_read_bytes_total",
            "number of bytes read by this group",
            &|c| c.read_bytes as f64,
        )?;
        counter(
            out,
            "namedprocess_namegroup_write_bytes_total",
            "number of bytes written by this group",
            &|c| c.write_bytes as f64,
        )?;
        counter(
            out,
            "namedprocess_namegroup_major_page_faults_total",
            "Major page faults",
            &|c| c.majflt as f64,
        )?;
        counter(
            out,
            "namedprocess_namegroup_minor_page_faults_total",
            "Minor page faults",
            &|c| c.minflt as f64,
        )?;
        let mut fam = out.family(
            "namedprocess_namegroup_context_switches_total",
            "Context switches",
            Kind::Counter,
        )?;
        for (gname, c) in &totals {
            fam.sample(
                &[
                    ("groupname", gname.as_str()),
                    ("ctxswitchtype", "nonvoluntary"),
                ],
                c.nonvoluntary as f64,
            )?;
            fam.sample(
                &[
                    ("groupname", gname.as_str()),
                    ("ctxswitchtype", "voluntary"),
                ],
                c.voluntary as f64,
            )?;
        }
        drop(fam);
        let mut fam = out.family(
            "namedprocess_namegroup_states",
            "Number of processes in states Running, Sleeping, Waiting, Zombie, or Other",
            Kind::Gauge,
        )?;
        for (gname, g) in &groups {
            for state in ["Other", "Running", "Sleeping", "Waiting", "Zombie"] {
                let n = g.states.get(state).copied().unwrap_or(0);
                fam.sample(&[("groupname", gname.as_str()), ("state", state)], n as f64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 75 0 0 20 0 2 0 98765 123456789 512 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_counts_fields_after_the_last_paren() {
        let (comm, s) = parse_stat(STAT).unwrap();
        assert_eq!(comm, "my (odd) name");
        assert_eq!(
            s,
            Stat {
                state: 'S',
                minflt: 1200,
                majflt: 3,
                utime_ticks: 250,
                stime_ticks: 75,
                starttime_ticks: 98765,
            }
        );
        let e = parse_stat("1 (x) S 1 2\n").unwrap_err();
        assert!(e.msg.contains("minflt"), "{e:?}");
        let e = parse_stat("1 x) (y\n").unwrap_err();
        assert!(e.msg.contains("before the first '('"), "{e:?}");
    }

    #[test]
    fn non_utf8_procfs_text_is_read_with_replacement() {
        let dir = std::env::temp_dir().join(format!("hostlens-pg-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cmdline");
        std::fs::write(&p, b"/usr/bin/caf\xe9\0--name=\xff\0").unwrap();
        let text = read_opt(&p).unwrap();
        assert_eq!(text, "/usr/bin/caf\u{fffd}\0--name=\u{fffd}\0");
        assert_eq!(read_opt(&dir.join("absent")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn status_io_limits_pss_btime() {
        let st = parse_status(
            "Name:\tx\nThreads:\t3\nVmSize:\t  1000 kB\nVmRSS:\t 200 kB\nVmSwap:\t 0 kB\n\
             voluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t2\n",
        )
        .unwrap();
        assert_eq!((st.threads, st.vm_size, st.vm_rss), (3, 1_024_000, 204_800));
        assert_eq!((st.voluntary, st.nonvoluntary), (7, 2));
        assert!(
            parse_status("Threads:\tmany\n")
                .unwrap_err()
                .msg
                .contains("Threads")
        );
        assert_eq!(
            parse_io("rchar: 5\nwchar: 6\nread_bytes: 4096\nwrite_bytes: 8192\n").unwrap(),
            (4096, 8192)
        );
        assert_eq!(
            parse_limits_nofile(
                "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max open files            1024                 524288               files\n"
            ),
            Some(1024)
        );
        assert_eq!(parse_pss("Rss: 10 kB\nPss:  6 kB\n").unwrap(), 6144);
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n").unwrap(),
            1_700_000_000
        );
        assert!(parse_btime("cpu 1\n").is_err());
    }

    fn id(comm: &str, exe: &str, cmd: &[&str]) -> Identity {
        Identity {
            comm: comm.into(),
            exe: exe.into(),
            cmdline: cmd.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn default_groups_by_executable_and_skips_kernel_threads() {
        let m = ProcessGroupsConfig::default().compile().unwrap();
        assert_eq!(
            group_of(
                &m,
                &id("python3", "/usr/bin/python3.11", &["python3", "x.py"])
            ),
            Some("python3.11".into())
        );
        assert_eq!(
            group_of(&m, &id("nginx", "/usr/sbin/nginx (deleted)", &["nginx"])),
            Some("nginx".into())
        );
        assert_eq!(group_of(&m, &id("kworker/0:1", "", &[])), None);
    }

    #[test]
    fn matchers_like_process_exporter() {
        let cfg: ProcessGroupsConfig = serde_yaml::from_str(
            "matchers:\n\
             - name: \"web-{{.Matches.site}}\"\n  cmdline: ['--site=(?P<site>\\w+)']\n\
             - comm: [postgres]\n\
             - name: \"{{.Comm}}:{{.ExeFull}}\"\n  exe: [python3.11]\n",
        )
        .unwrap();
        let m = cfg.compile().unwrap();
        assert_eq!(
            group_of(&m, &id("node", "/usr/bin/node", &["node", "--site=shop"])),
            Some("web-shop".into())
        );
        assert_eq!(
            group_of(
                &m,
                &id(
                    "postgres",
                    "/usr/lib/postgresql/bin/postgres",
                    &["postgres"]
                )
            ),
            Some("postgres".into())
        );
        assert_eq!(
            group_of(&m, &id("py", "/usr/bin/python3.11", &["py"])),
            Some("py:/usr/bin/python3.11".into())
        );
        assert_eq!(group_of(&m, &id("bash", "/bin/bash", &["bash"])), None);
    }

    #[test]
    fn bad_matchers_name_the_entry() {
        let bad = |y: &str| {
            serde_yaml::from_str::<ProcessGroupsConfig>(y)
                .unwrap()
                .validate()
                .unwrap_err()
        };
        assert_eq!(
            bad("matchers:\n- cmdline: ['(']\n").0,
            "matchers[0].cmdline[0]"
        );
        assert_eq!(bad("matchers:\n- name: x\n").0, "matchers[0]");
        let (k, msg) = bad("matchers:\n- comm: [a]\n  name: '{{.Pid}}'\n");
        assert_eq!(k, "matchers[0].name");
        assert!(msg.contains("{{.Pid}}"), "{msg}");
    }
}
