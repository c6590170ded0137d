//! `timex`: the kernel clock discipline from adjtimex(2) (read-only, `modes = 0`); produces
//! `node_timex_*` (offset, frequency adjustment, errors, status, PPS statistics,
//! `node_timex_sync_status`), with node_exporter's units.
use super::{CollectorContext, CollectorError, NodeCollector};
use crate::emit::Out;

/// `STA_NANO`: offsets are in nanoseconds instead of microseconds (include/uapi/linux/timex.h).
const STA_NANO: i32 = 0x2000;
/// adjtimex's return value when the clock is not synchronised.
const TIME_ERROR: i32 = 5;
/// Scaled-ppm unit of `freq`, `ppsfreq`, `stabil`: ppm with a 16-bit fraction.
const PPM16FRAC: f64 = 1_000_000.0 * 65536.0;

#[derive(Debug)]
pub struct Timex;

pub fn new(_ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Timex))
}

impl NodeCollector for Timex {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        // SAFETY: a zeroed timex with modes = 0 only reads the kernel state.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `tx` is a valid, writable struct timex.
        let status = unsafe { libc::adjtimex(&mut tx) };
        if status < 0 {
            return Err(CollectorError::Other(format!(
                "adjtimex: {}",
                std::io::Error::last_os_error()
            )));
        }
        let divisor = if tx.status & STA_NANO != 0 { 1e9 } else { 1e6 };
        let sync = if status == TIME_ERROR { 0.0 } else { 1.0 };
        let gauges: [(&str, &str, f64); 12] = [
            (
                "node_timex_offset_seconds",
                "Time offset in between local system and reference clock.",
                tx.offset as f64 / divisor,
            ),
            (
                "node_timex_frequency_adjustment_ratio",
                "Local clock frequency adjustment.",
                1.0 + tx.freq as f64 / PPM16FRAC,
            ),
            (
                "node_timex_maxerror_seconds",
                "Maximum error in seconds.",
                tx.maxerror as f64 / 1e6,
            ),
            (
                "node_timex_estimated_error_seconds",
                "Estimated error in seconds.",
                tx.esterror as f64 / 1e6,
            ),
            (
                "node_timex_status",
                "Value of the status array bits.",
                tx.status as f64,
            ),
            (
                "node_timex_loop_time_constant",
                "Phase-locked loop time constant.",
                tx.constant as f64,
            ),
            (
                "node_timex_tick_seconds",
                "Seconds between clock ticks.",
                tx.tick as f64 / 1e6,
            ),
            (
                "node_timex_pps_frequency_hertz",
                "Pulse per second frequency.",
                tx.ppsfreq as f64 / PPM16FRAC,
            ),
            (
                "node_timex_pps_jitter_seconds",
                "Pulse per second jitter.",
                tx.jitter as f64 / divisor,
            ),
            (
                "node_timex_pps_shift_seconds",
                "Pulse per second interval duration.",
                tx.shift as f64,
            ),
            (
                "node_timex_pps_stability_hertz",
                "Pulse per second stability, average of recent frequency changes.",
                tx.stabil as f64 / PPM16FRAC,
            ),
            (
                "node_timex_tai_offset_seconds",
                "International Atomic Time (TAI) offset.",
                tx.tai as f64,
            ),
        ];
        out.gauge(
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            sync,
        )?;
        for (name, help, v) in gauges {
            out.gauge(name, help, v)?;
        }
        for (name, help, v) in [
            (
                "node_timex_pps_jitter_total",
                "Pulse per second count of jitter limit exceeded events.",
                tx.jitcnt,
            ),
            (
                "node_timex_pps_calibration_total",
                "Pulse per second count of calibration intervals.",
                tx.calcnt,
            ),
            (
                "node_timex_pps_error_total",
                "Pulse per second count of calibration errors.",
                tx.errcnt,
            ),
            (
                "node_timex_pps_stability_exceeded_total",
                "Pulse per second count of stability limit exceeded events.",
                tx.stbcnt,
            ),
        ] {
            out.counter(name, help, v as f64)?;
        }
        Ok(())
    }
}
