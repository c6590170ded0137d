//! `mdadm`: reads `<procfs>/mdstat`; produces node_exporter 1.5's `node_md_state{device,state}`
//! (one of active, inactive, recovering, resync, check is 1), `node_md_disks{device,state}`
//! (active, failed, spare), `node_md_disks_required{device}`, `node_md_blocks{device}` and
//! `node_md_blocks_synced{device}`.
//!
//! The format is the kernel's `md_seq_show()` (drivers/md/md.c): a device line
//! `md0 : active raid1 sdb1[1] sda1[0](F)`, a status line `1234 blocks ... [2/1] [U_]`, and
//! while resyncing a progress line `[=>...]  recovery =  8.5% (16775552/195310144) ...`.
use std::{path::PathBuf, sync::LazyLock};

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, read_file, sysfs::Samples,
};
use crate::emit::Out;

#[derive(Debug)]
pub struct Mdadm {
    path: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Mdadm {
        path: ctx.paths.proc("mdstat"),
    }))
}

#[derive(Debug, Clone, PartialEq)]
pub struct MdStat {
    pub name: String,
    /// active, inactive, recovering, checking or resyncing.
    pub state: String,
    pub disks_active: i64,
    pub disks_failed: i64,
    pub disks_spare: i64,
    pub disks_total: i64,
    pub blocks_total: i64,
    pub blocks_synced: i64,
}

static STATUS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\d+) blocks .*\[(\d+)/(\d+)\] \[([U_]+)\]").expect("valid regex")
});
static RECOVERY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\((\d+)/\d+\)").expect("valid regex"));

fn int(s: &str, line: usize, what: &str) -> Result<i64, LineError> {
    s.parse::<i64>()
        .map_err(|_| LineError::new(line, format!("{what}: {s:?} is not an integer")))
}

/// Parses `/proc/mdstat`.
pub fn parse(text: &str) -> Result<Vec<MdStat>, LineError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty()
            || line.starts_with(' ')
            || line.starts_with('\t')
            || line.starts_with("Personalities")
            || line.starts_with("unused")
        {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            return Err(LineError::new(
                lineno,
                format!("not enough fields in md line (expected at least 3): {line:?}"),
            ));
        }
        let name = fields[0].to_string();
        let mut state = fields[2].to_string();
        if lines.len() <= i + 3 {
            return Err(LineError::new(
                lineno,
                format!("too few lines for md device {name}"),
            ));
        }
        let failed = line.matches("(F)").count() as i64;
        let spare = line.matches("(S)").count() as i64;
        let status = lines[i + 1];
        let size_field = status
            .split_whitespace()
            .next()
            .ok_or_else(|| LineError::new(lineno + 1, format!("{name}: empty status line")))?;
        let size = int(size_field, lineno + 1, "block count")?;
        let (active, total) = if line.contains("raid0") || line.contains("linear") {
            let n = line.matches('[').count() as i64;
            (n, n)
        } else if line.contains("inactive") {
            (0, 0)
        } else {
            let c = STATUS.captures(status).ok_or_else(|| {
                LineError::new(
                    lineno + 1,
                    format!("{name}: status line lacks \"N blocks ... [total/active] [U_]\""),
                )
            })?;
            (
                int(&c[3], lineno + 1, "active disks")?,
                int(&c[2], lineno + 1, "total disks")?,
            )
        };
        let mut sync_idx = i + 2;
        if lines[sync_idx].contains("bitmap") {
            sync_idx += 1;
        }
        let sync = lines.get(sync_idx).copied().unwrap_or("");
        let mut synced = size;
        let recovering = sync.contains("recovery");
        let resyncing = sync.contains("resync");
        let checking = sync.contains("check");
        if recovering || resyncing || checking {
            state = if recovering {
                "recovering"
            } else if checking {
                "checking"
            } else {
                "resyncing"
            }
            .to_string();
            if sync.contains("PENDING") || sync.contains("DELAYED") {
                synced = 0;
            } else {
                let c = RECOVERY.captures(sync).ok_or_else(|| {
                    LineError::new(
                        sync_idx + 1,
                        format!("{name}: progress line lacks (done/total)"),
                    )
                })?;
                synced = int(&c[1], sync_idx + 1, "synced blocks")?;
            }
        }
        out.push(MdStat {
            name,
            state,
            disks_active: active,
            disks_failed: failed,
            disks_spare: spare,
            disks_total: total,
            blocks_total: size,
            blocks_synced: synced,
        });
    }
    Ok(out)
}

pub fn metrics(m: &mut Samples, stats: &[MdStat]) {
    for s in stats {
        let dev = s.name.as_str();
        for (label, state) in [
            ("active", "active"),
            ("inactive", "inactive"),
            ("recovering", "recovering"),
            ("resync", "resyncing"),
            ("check", "checking"),
        ] {
            m.gauge(
                "node_md_state",
                "Indicates the state of md-device.",
                &[("device", dev), ("state", label)],
                if s.state == state { 1.0 } else { 0.0 },
            );
        }
        m.gauge(
            "node_md_disks_required",
            "Total number of disks of device.",
            &[("device", dev)],
            s.disks_total as f64,
        );
        for (state, v) in [
            ("active", s.disks_active),
            ("failed", s.disks_failed),
            ("spare", s.disks_spare),
        ] {
            m.gauge(
                "node_md_disks",
                "Number of active/failed/spare disks of device.",
                &[("device", dev), ("state", state)],
                v as f64,
            );
        }
        m.gauge(
            "node_md_blocks",
            "Total number of blocks on device.",
            &[("device", dev)],
            s.blocks_total as f64,
        );
        m.gauge(
            "node_md_blocks_synced",
            "Number of blocks synced on device.",
            &[("device", dev)],
            s.blocks_synced as f64,
        );
    }
}

impl NodeCollector for Mdadm {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let stats = parse(&text).map_err(|e| e.at(&self.path))?;
        let mut m = Samples::default();
        metrics(&mut m, &stats);
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MDSTAT: &str = "Personalities : [raid1]
md6 : active raid1 sdb2[2](F) sdc[1](S) sda2[0]
      195310144 blocks [2/1] [U_]
      [=>...................]  recovery =  8.5% (16775552/195310144) finish=17.0min speed=259783K/sec

md4 : inactive raid1 sda3[0](F) sdb3[1](S)
      4883648 blocks [2/2] [UU]

md7 : active raid0 sda[0] sdb[1]
      100 blocks super 1.2 512k chunks

unused devices: <none>
";

    #[test]
    fn parses_states_disks_and_progress() {
        let s = parse(MDSTAT).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            MdStat {
                name: "md6".into(),
                state: "recovering".into(),
                disks_active: 1,
                disks_failed: 1,
                disks_spare: 1,
                disks_total: 2,
                blocks_total: 195310144,
                blocks_synced: 16775552,
            }
        );
        assert_eq!((s[1].state.as_str(), s[1].disks_total), ("inactive", 0));
        assert_eq!((s[2].disks_active, s[2].disks_total), (2, 2));
    }

    #[test]
    fn malformed_names_the_line() {
        let e = parse("md0 : active raid1 sda[0]\n      xx blocks [2/2] [UU]\n\n\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("md0 : active\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("md0 : active raid1 sda[0]\n      10 blocks\n\n\n").unwrap_err();
        assert_eq!(e.line, 2);
    }
}
