//! Rebuilds the eBPF object when the bpf-linker binary changes: rustc links BPF objects
//! with it, but cargo does not know that.
use which::which;

fn main() {
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"mips64\", \"loongarch64\"))"
    );
    match which("bpf-linker") {
        Ok(path) => println!("cargo::rerun-if-changed={}", path.display()),
        Err(err) => {
            println!("cargo::warning=bpf-linker not found on PATH ({err}); run `cargo xtask setup`")
        }
    }
}
