//! Rebuild the eBPF object when the linker changes (a new bpf-linker can emit different BTF).
fn main() {
    // aya-build passes `--cfg bpf_target_arch="<host arch>"`; declare it for check-cfg.
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"loongarch64\"))"
    );
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
