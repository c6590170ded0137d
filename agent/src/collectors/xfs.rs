//! `xfs`: reads `<sysfs>/fs/xfs/<device>/stats/stats` (XFS per-filesystem statistics,
//! fs/xfs/xfs_stats.c); produces node_exporter 1.5's `node_xfs_*_total{device}` counters:
//! extent allocation, allocation and block-map B-trees, block mapping, directory operations,
//! inode cache operations, read/write calls and vnode operations.
use std::{collections::BTreeMap, path::PathBuf};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, read_file,
    sysfs::{Samples, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Xfs {
    dir: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Xfs {
        dir: ctx.paths.sys("fs/xfs"),
    }))
}

/// (stats line, field index, metric suffix, help).
const FIELDS: &[(&str, usize, &str, &str)] = &[
    (
        "extent_alloc",
        0,
        "extent_allocation_extents_allocated_total",
        "Number of extents allocated for a filesystem.",
    ),
    (
        "extent_alloc",
        1,
        "extent_allocation_blocks_allocated_total",
        "Number of blocks allocated for a filesystem.",
    ),
    (
        "extent_alloc",
        2,
        "extent_allocation_extents_freed_total",
        "Number of extents freed for a filesystem.",
    ),
    (
        "extent_alloc",
        3,
        "extent_allocation_blocks_freed_total",
        "Number of blocks freed for a filesystem.",
    ),
    (
        "abt",
        0,
        "allocation_btree_lookups_total",
        "Number of allocation B-tree lookups for a filesystem.",
    ),
    (
        "abt",
        1,
        "allocation_btree_compares_total",
        "Number of allocation B-tree compares for a filesystem.",
    ),
    (
        "abt",
        2,
        "allocation_btree_records_inserted_total",
        "Number of allocation B-tree records inserted for a filesystem.",
    ),
    (
        "abt",
        3,
        "allocation_btree_records_deleted_total",
        "Number of allocation B-tree records deleted for a filesystem.",
    ),
    (
        "blk_map",
        0,
        "block_mapping_reads_total",
        "Number of block map for read operations for a filesystem.",
    ),
    (
        "blk_map",
        1,
        "block_mapping_writes_total",
        "Number of block map for write operations for a filesystem.",
    ),
    (
        "blk_map",
        2,
        "block_mapping_unmaps_total",
        "Number of block unmaps (deletes) for a filesystem.",
    ),
    (
        "blk_map",
        3,
        "block_mapping_extent_list_insertions_total",
        "Number of extent list insertions for a filesystem.",
    ),
    (
        "blk_map",
        4,
        "block_mapping_extent_list_deletions_total",
        "Number of extent list deletions for a filesystem.",
    ),
    (
        "blk_map",
        5,
        "block_mapping_extent_list_lookups_total",
        "Number of extent list lookups for a filesystem.",
    ),
    (
        "blk_map",
        6,
        "block_mapping_extent_list_compares_total",
        "Number of extent list compares for a filesystem.",
    ),
    (
        "bmbt",
        0,
        "block_map_btree_lookups_total",
        "Number of block map B-tree lookups for a filesystem.",
    ),
    (
        "bmbt",
        1,
        "block_map_btree_compares_total",
        "Number of block map B-tree compares for a filesystem.",
    ),
    (
        "bmbt",
        2,
        "block_map_btree_records_inserted_total",
        "Number of block map B-tree records inserted for a filesystem.",
    ),
    (
        "bmbt",
        3,
        "block_map_btree_records_deleted_total",
        "Number of block map B-tree records deleted for a filesystem.",
    ),
    (
        "dir",
        0,
        "directory_operation_lookup_total",
        "Number of file name directory lookups which miss the operating systems directory name lookup cache.",
    ),
    (
        "dir",
        1,
        "directory_operation_create_total",
        "Number of times a new directory entry was created for a filesystem.",
    ),
    (
        "dir",
        2,
        "directory_operation_remove_total",
        "Number of times an existing directory entry was created for a filesystem.",
    ),
    (
        "dir",
        3,
        "directory_operation_getdents_total",
        "Number of times the directory getdents operation was performed for a filesystem.",
    ),
    (
        "ig",
        0,
        "inode_operation_attempts_total",
        "Number of times the OS looked for an XFS inode in the inode cache.",
    ),
    (
        "ig",
        1,
        "inode_operation_found_total",
        "Number of times the OS looked for and found an XFS inode in the inode cache.",
    ),
    (
        "ig",
        2,
        "inode_operation_recycled_total",
        "Number of times the OS found an XFS inode in the cache, but could not use it as it was being recycled.",
    ),
    (
        "ig",
        3,
        "inode_operation_missed_total",
        "Number of times the OS looked for an XFS inode in the cache, but did not find it.",
    ),
    (
        "ig",
        4,
        "inode_operation_duplicates_total",
        "Number of times the OS tried to add a missing XFS inode to the inode cache, but found it had already been added by another process.",
    ),
    (
        "ig",
        5,
        "inode_operation_reclaims_total",
        "Number of times the OS reclaimed an XFS inode from the inode cache to free memory for another purpose.",
    ),
    (
        "ig",
        6,
        "inode_operation_attribute_changes_total",
        "Number of times the OS explicitly changed the attributes of an XFS inode.",
    ),
    (
        "rw",
        0,
        "write_calls_total",
        "Number of write(2) system calls made to files in a filesystem.",
    ),
    (
        "rw",
        1,
        "read_calls_total",
        "Number of read(2) system calls made to files in a filesystem.",
    ),
    (
        "vnodes",
        0,
        "vnode_active_total",
        "Number of vnodes not on free lists for a filesystem.",
    ),
    (
        "vnodes",
        1,
        "vnode_allocate_total",
        "Number of times vn_alloc called for a filesystem.",
    ),
    (
        "vnodes",
        2,
        "vnode_get_total",
        "Number of times vn_get called for a filesystem.",
    ),
    (
        "vnodes",
        3,
        "vnode_hold_total",
        "Number of times vn_hold called for a filesystem.",
    ),
    (
        "vnodes",
        4,
        "vnode_release_total",
        "Number of times vn_rele called for a filesystem.",
    ),
    (
        "vnodes",
        5,
        "vnode_reclaim_total",
        "Number of times vn_reclaim called for a filesystem.",
    ),
    (
        "vnodes",
        6,
        "vnode_remove_total",
        "Number of times vn_remove called for a filesystem.",
    ),
];

/// Parses the stats file into line name -> (line number, values).
pub fn parse(text: &str) -> Result<BTreeMap<String, (usize, Vec<f64>)>, LineError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace();
        let Some(key) = f.next() else { continue };
        let mut vals = Vec::new();
        for v in f {
            vals.push(v.parse::<u64>().map(|v| v as f64).map_err(|_| {
                LineError::new(i + 1, format!("{key}: {v:?} is not an unsigned integer"))
            })?);
        }
        out.insert(key.to_string(), (i + 1, vals));
    }
    Ok(out)
}

/// One filesystem's families.
pub fn metrics(m: &mut Samples, device: &str, text: &str) -> Result<(), LineError> {
    let lines = parse(text)?;
    for (line, idx, suffix, help) in FIELDS {
        let Some((no, vals)) = lines.get(*line) else {
            continue;
        };
        let v = vals.get(*idx).ok_or_else(|| {
            LineError::new(
                *no,
                format!("{line}: {} values, expected more than {idx}", vals.len()),
            )
        })?;
        m.add(
            &format!("node_xfs_{suffix}"),
            help,
            Kind::Counter,
            &[("device", device)],
            *v,
        );
    }
    Ok(())
}

impl NodeCollector for Xfs {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for dev in list_dir(&self.dir)? {
            let path = self.dir.join(&dev).join("stats/stats");
            if !path.is_file() || dev == "stats" {
                continue;
            }
            let text = read_file(&path)?;
            metrics(&mut m, &dev, &text).map_err(|e| e.at(&path))?;
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_fields() {
        let mut m = Samples::default();
        metrics(
            &mut m,
            "sda1",
            "extent_alloc 1 2 3 4\nrw 7 8\nvnodes 1 2 3 4 5 6 7 8\n",
        )
        .unwrap();
        let d = [("device", "sda1")];
        assert_eq!(
            m.get("node_xfs_extent_allocation_blocks_freed_total", &d),
            Some(4.0)
        );
        assert_eq!(m.get("node_xfs_read_calls_total", &d), Some(8.0));
        assert_eq!(m.get("node_xfs_vnode_remove_total", &d), Some(7.0));
        let e = metrics(&mut Samples::default(), "x", "abt 1\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert_eq!(
            metrics(&mut Samples::default(), "x", "rw 1 2\nig x\n")
                .unwrap_err()
                .line,
            2
        );
    }
}
