//! What every eBPF object of the crate needs: the panic handler `no_std` asks for and the
//! licence section.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; this only satisfies `no_std`.
    loop {}
}

/// The kernel refuses GPL-only helpers (e.g. `bpf_probe_read_user`) to programs without a
/// GPL-compatible licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
