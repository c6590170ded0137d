//! `syscalls` probe, user half: attaches `raw_tracepoint/sys_enter` and, at scrape time, sums
//! the per-CPU counters of `SYSCALL_COUNTS` into `syscalls_total{syscall}` (node-wide).
use agent_common::syscalls::{MAP_COUNTS, MAX_SYSCALLS, OVERFLOW_SLOT, SyscallCounts};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
    programs::RawTracePoint,
};

use super::{ProbeCollector, ProbeError, syscall_names};
use crate::emit::{Kind, Out};

const PROGRAM: &str = "syscalls_sys_enter";

pub struct SyscallsProbe {
    counts: PerCpuArray<MapData, SyscallCounts>,
}

impl std::fmt::Debug for SyscallsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyscallsProbe")
    }
}

pub fn attach(ebpf: &mut Ebpf) -> Result<Box<dyn ProbeCollector>, ProbeError> {
    let prog_err = |source| ProbeError::Program {
        program: PROGRAM,
        source,
    };
    let program: &mut RawTracePoint = ebpf
        .program_mut(PROGRAM)
        .ok_or(ProbeError::MissingProgram(PROGRAM))?
        .try_into()
        .map_err(prog_err)?;
    program.load().map_err(prog_err)?;
    program.attach("sys_enter").map_err(prog_err)?;
    let map = ebpf
        .take_map(MAP_COUNTS)
        .ok_or(ProbeError::MissingMap(MAP_COUNTS))?;
    let counts = PerCpuArray::try_from(map).map_err(|source| ProbeError::Map {
        map: MAP_COUNTS,
        source,
    })?;
    Ok(Box::new(SyscallsProbe { counts }))
}

impl SyscallsProbe {
    /// Node-wide totals per syscall number (summed over CPUs).
    pub fn totals(&self) -> Result<Vec<u64>, ProbeError> {
        let per_cpu = self.counts.get(&0, 0).map_err(|source| ProbeError::Map {
            map: MAP_COUNTS,
            source,
        })?;
        let mut totals = vec![0u64; MAX_SYSCALLS];
        for cpu in per_cpu.iter() {
            for (t, c) in totals.iter_mut().zip(cpu.count.iter()) {
                *t = t.wrapping_add(*c);
            }
        }
        Ok(totals)
    }
}

impl ProbeCollector for SyscallsProbe {
    fn collect(&self, out: &mut Out<'_, '_>) -> Result<(), ProbeError> {
        let totals = self.totals()?;
        let mut fam = out.family(
            "syscalls_total",
            "System calls entered on this node, by syscall (x86_64 names).",
            Kind::Counter,
        )?;
        let mut unnamed = String::new();
        for (nr, count) in totals.iter().enumerate().filter(|(_, c)| **c > 0) {
            let label = match syscall_names::name(nr) {
                Some(n) => n,
                None if nr == OVERFLOW_SLOT => "unknown",
                None => {
                    unnamed.clear();
                    unnamed.push_str("syscall_");
                    unnamed.push_str(&nr.to_string());
                    &unnamed
                }
            };
            fam.sample(&[("syscall", label)], *count as f64)?;
        }
        Ok(())
    }
}
