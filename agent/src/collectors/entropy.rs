//! `entropy`: reads `<procfs>/sys/kernel/random/{entropy_avail,poolsize}`; produces
//! `node_entropy_available_bits` and `node_entropy_pool_size_bits`.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, NodeCollector, read_number};
use crate::emit::Out;

#[derive(Debug)]
pub struct Entropy {
    dir: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Entropy {
        dir: ctx.paths.proc("sys/kernel/random"),
    }))
}

impl NodeCollector for Entropy {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let avail = read_number(&self.dir.join("entropy_avail"))?;
        let pool = read_number(&self.dir.join("poolsize"))?;
        out.gauge(
            "node_entropy_available_bits",
            "Bits of available entropy.",
            avail,
        )?;
        out.gauge("node_entropy_pool_size_bits", "Bits of entropy pool.", pool)?;
        Ok(())
    }
}
