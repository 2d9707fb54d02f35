//! Links the stowage binary as a position-dependent executable on Linux.
//!
//! A position-independent one gets its pointer tables (vtables, static string and slice
//! tables: 2 MiB here, much of it the embedded time-zone database and the S3 SDK)
//! relocated when it starts, which writes every page of them: 2 MiB of anonymous memory
//! held for the life of the daemon, doubling what it keeps between runs. Linked
//! position-dependent, the same pages stay clean file pages that the kernel can drop
//! (src/footprint.rs). The price is that the executable's own code loads at a fixed
//! address (libraries, heap and stacks stay randomized).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
