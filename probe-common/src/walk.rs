//! The kernel's sequential test: `SUSPECTS`, its cells and the walk's bounds.

/// Array of sets of [`SUSPECT_WAYS`] cells (`[u64; SUSPECT_WAYS]`), each cell one source's
/// sequential hypothesis test in the kernel (see [`suspect`]): set by a keyed hash of the
/// source's unit (an IPv4 address, an IPv6 /64), a 32-bit tag in the cell.
pub const SUSPECTS_MAP: &str = "SUSPECTS";
/// Cells per set; a new source takes the cell with the lowest walk (an empty or idle one
/// first, then the oldest of the lowest), so sources of one probe each, however many,
/// never take the place of a source whose walk went higher.
pub const SUSPECT_WAYS: usize = 4;
/// Default sets: 262 144 × 4 cells × 8 B = 8 MiB for 1 048 576 sources.
pub const SUSPECT_SETS: u32 = 262_144;
/// Global (`u32`): sets − 1 (sets are a power of two, set at load).
pub const SUSPECT_MASK_GLOBAL: &str = "SUSPECT_MASK";
/// Global (`u16`): sweeps after which an idle source's walk starts over.
pub const WALK_IDLE_GLOBAL: &str = "WALK_IDLE";
/// The walk at which the kernel decides that a source scans: four first failures more
/// than first successes. With θ0 = 0.8, θ1 = 0.2, each first failure multiplies the
/// likelihood ratio by 4 and each first success divides it by 4; η1 = PD / PF = 99 lies
/// between 4^3 and 4^4.
pub const WALK_SCAN: i8 = 4;
/// The walk at which a source is taken for benign and starts over (η0 = (1 − PD) /
/// (1 − PF) ≈ 1/99, between 4^-4 and 4^-3).
pub const WALK_BENIGN: i8 = -4;
/// Expiry sweeps (seconds, at the default pace) after which an idle source's walk starts
/// over: the userspace test's 10 idle minutes.
pub const WALK_IDLE_EPOCHS: u16 = 600;

const _: () = assert!(SUSPECT_SETS.is_power_of_two());

/// One `SUSPECTS` cell, packed in a `u64` (0: empty): the sweep epoch of its last change
/// (bits 0-15), its distinct first failures (bits 16-22, saturating at 127), whether the
/// verdict was given (bit 23), its walk (bits 24-31, an `i8`), its tag (bits 32-63,
/// never 0).
pub mod suspect {
    /// The cell's tag (0: empty).
    pub const fn tag(cell: u64) -> u32 {
        (cell >> 32) as u32
    }

    /// The walk: first failures minus first successes since it (re)started.
    pub const fn walk(cell: u64) -> i8 {
        (cell >> 24) as u8 as i8
    }

    /// Distinct first failures since it (re)started, saturating at 127.
    pub const fn failures(cell: u64) -> u8 {
        ((cell >> 16) & 0x7f) as u8
    }

    /// Whether the walk reached the verdict (it stays there until the source idles).
    pub const fn decided(cell: u64) -> bool {
        cell & (1 << 23) != 0
    }

    /// The sweep epoch (low 16 bits) of its last change.
    pub const fn epoch(cell: u64) -> u16 {
        cell as u16
    }

    /// A cell of these parts.
    pub const fn pack(tag: u32, walk: i8, failures: u8, decided: bool, epoch: u16) -> u64 {
        ((tag as u64) << 32)
            | ((walk as u8 as u64) << 24)
            | ((decided as u64) << 23)
            | (((failures & 0x7f) as u64) << 16)
            | epoch as u64
    }
}
