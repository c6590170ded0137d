//! `interrupts` (off by default): reads `<procfs>/interrupts`; produces
//! `node_interrupts_total{cpu,type,info,devices}`.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Interrupts {
    path: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Interrupts {
        path: ctx.paths.proc("interrupts"),
    }))
}

/// One interrupt line: type (IRQ number or name), info, devices, per-CPU counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Interrupt<'a> {
    pub kind: &'a str,
    pub info: String,
    pub devices: String,
    pub counts: Vec<f64>,
}

pub fn parse(text: &str) -> Result<(usize, Vec<Interrupt<'_>>), LineError> {
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Ok((0, Vec::new()));
    };
    let ncpu = header.split_ascii_whitespace().count();
    let mut v = Vec::with_capacity(64);
    for (i, line) in lines {
        let parts: Vec<&str> = line.split_ascii_whitespace().collect();
        // Lines such as "ERR: 0" carry no per-CPU counts and no description.
        if parts.len() < ncpu + 2 {
            continue;
        }
        let Some(kind) = parts[0].strip_suffix(':') else {
            return Err(LineError::new(i + 1, format!("{:?} lacks ':'", parts[0])));
        };
        let counts = parts[1..=ncpu]
            .iter()
            .map(|c| parse_f64(c, i + 1, kind))
            .collect::<Result<Vec<_>, _>>()?;
        let (info, devices) = if kind.bytes().all(|b| b.is_ascii_digit()) {
            (parts[ncpu + 1].to_string(), parts[ncpu + 2..].join(" "))
        } else {
            (parts[ncpu + 1..].join(" "), String::new())
        };
        v.push(Interrupt {
            kind,
            info,
            devices,
            counts,
        });
    }
    Ok((ncpu, v))
}

impl NodeCollector for Interrupts {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let (ncpu, irqs) = parse(&text).map_err(|e| e.at(&self.path))?;
        let cpus: Vec<String> = (0..ncpu).map(|c| c.to_string()).collect();
        let mut f = out.family("node_interrupts_total", "Interrupt details.", Kind::Counter)?;
        for irq in &irqs {
            for (cpu, n) in cpus.iter().zip(&irq.counts) {
                f.sample(
                    &[
                        ("cpu", cpu.as_str()),
                        ("devices", irq.devices.as_str()),
                        ("info", irq.info.as_str()),
                        ("type", irq.kind),
                    ],
                    *n,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_named() {
        let t = "           CPU0       CPU1\n 28:          0          1  PCI-MSIX-0000:00:01.0   0-edge      virtio0-config\nNMI:          0          0   Non-maskable interrupts\nERR:          0\n";
        let (n, v) = parse(t).unwrap();
        assert_eq!(n, 2);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].kind, "28");
        assert_eq!(v[0].info, "PCI-MSIX-0000:00:01.0");
        assert_eq!(v[0].devices, "0-edge virtio0-config");
        assert_eq!(v[0].counts, vec![0.0, 1.0]);
        assert_eq!(v[1].info, "Non-maskable interrupts");
        assert_eq!(v[1].devices, "");
        assert_eq!(parse("CPU0\nLOC: x y\n").unwrap_err().line, 2);
    }
}
