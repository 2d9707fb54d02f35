//! The daemon's footprint, as built: a position-independent executable (issue 25).

mod common;

/// ELF `e_type` of the stowage binary is `ET_DYN` (a PIE), not `ET_EXEC`: the build no
/// longer links it position-dependent so that its own code pages could be dropped, and
/// the executable's address is randomized like its libraries'.
#[cfg(target_os = "linux")]
#[test]
fn the_binary_is_position_independent() {
    use std::io::Read;
    let bin = common::stowage_bin();
    let mut header = [0u8; 18];
    std::fs::File::open(&bin)
        .and_then(|mut f| f.read_exact(&mut header))
        .unwrap_or_else(|e| panic!("read the ELF header of {}: {e}", bin.display()));
    assert_eq!(&header[..4], b"\x7fELF", "{} is not ELF", bin.display());
    // e_type: 16 bits at offset 16, in the file's byte order (byte 5: 1 little, 2 big).
    let e_type = match header[5] {
        2 => u16::from_be_bytes([header[16], header[17]]),
        _ => u16::from_le_bytes([header[16], header[17]]),
    };
    const ET_EXEC: u16 = 2;
    const ET_DYN: u16 = 3;
    assert_ne!(
        e_type,
        ET_EXEC,
        "{} is linked position-dependent",
        bin.display()
    );
    assert_eq!(e_type, ET_DYN, "{}: e_type {e_type}", bin.display());
}
