//! `uname`: reads `<procfs>/sys/kernel/{ostype,hostname,osrelease,version,domainname,arch}`
//! (the same strings uname(2) returns in the agent's UTS namespace); produces
//! `node_uname_info{sysname,release,version,machine,nodename,domainname} 1`.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, NodeCollector, read_file};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Uname {
    dir: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Uname {
        dir: ctx.paths.proc("sys/kernel"),
    }))
}

fn field(dir: &std::path::Path, file: &str) -> Result<String, CollectorError> {
    Ok(read_file(&dir.join(file))?
        .trim_end_matches('\n')
        .to_string())
}

impl NodeCollector for Uname {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let sysname = field(&self.dir, "ostype")?;
        let release = field(&self.dir, "osrelease")?;
        let version = field(&self.dir, "version")?;
        let nodename = field(&self.dir, "hostname")?;
        let domainname = field(&self.dir, "domainname")?;
        // `arch` appeared in Linux 6.1; older kernels only tell it through uname(2).
        let machine = match field(&self.dir, "arch") {
            Ok(m) => m,
            Err(CollectorError::NoData(_)) => std::env::consts::ARCH.to_string(),
            Err(e) => return Err(e),
        };
        let labels = [
            ("domainname", domainname.as_str()),
            ("machine", machine.as_str()),
            ("nodename", nodename.as_str()),
            ("release", release.as_str()),
            ("sysname", sysname.as_str()),
            ("version", version.as_str()),
        ];
        out.family(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            Kind::Gauge,
        )?
        .sample(&labels, 1.0)?;
        Ok(())
    }
}
