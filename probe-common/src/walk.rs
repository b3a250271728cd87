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

/// Global (`u32`): 1 when a verdict waits while a first TCP success of the source waits to
/// be settled (`--settle-successes`; see [`suspect::waiting`]), 0 (the default) when the
/// failure that reaches [`WALK_SCAN`] decides whatever waits.
pub const SETTLE_SUCCESSES_GLOBAL: &str = "SETTLE_SUCCESSES";

/// The highest walk a cell holds: a walk past [`WALK_SCAN`] whose verdict waits for a
/// first success to be settled (see [`suspect::waiting`]) goes on counting up to here.
pub const WALK_MAX: i8 = 7;
/// Sweep epochs a waiting first success holds the verdict back at most: its connection is
/// counted ([`crate::CONFIRM_AFTER_EPOCHS`] sweeps after its SYN) or reset before then; a
/// waiting success whose slot another flow took is forgotten after this many.
pub const WAIT_EPOCHS: u16 = crate::CONFIRM_AFTER_EPOCHS as u16 + 2;

const _: () = assert!(WALK_SCAN < WALK_MAX && WAIT_EPOCHS < 32);

/// One `SUSPECTS` cell, packed in a `u64` (0: empty): the sweep epoch of its last change
/// (bits 0-15), its distinct first failures (bits 16-19, saturating at 15), whether the
/// verdict was given (bit 20), its first TCP successes waiting to be settled (bits 21-22,
/// at most 3), the sweep epoch of the latest of them (bits 23-27, its low 5 bits),
/// its walk (bits 28-31, a 4-bit signed number), its tag (bits 32-63, never 0).
pub mod suspect {
    use super::WAIT_EPOCHS;

    /// The cell's tag (0: empty).
    pub const fn tag(cell: u64) -> u32 {
        (cell >> 32) as u32
    }

    /// The walk: first failures minus first successes since it (re)started.
    pub const fn walk(cell: u64) -> i8 {
        // The high nibble of the low word, sign-extended.
        ((cell as u32) as i32 >> 28) as i8
    }

    /// Distinct first failures since it (re)started, saturating at 15.
    pub const fn failures(cell: u64) -> u8 {
        ((cell >> 16) & 0xf) as u8
    }

    /// Whether the walk reached the verdict (it stays there until the source idles).
    pub const fn decided(cell: u64) -> bool {
        cell & (1 << 20) != 0
    }

    /// The sweep epoch (low 16 bits) of its last change.
    pub const fn epoch(cell: u64) -> u16 {
        cell as u16
    }

    /// First TCP successes of the source that wait to be settled, as of sweep `epoch`: our
    /// SYN-ACK answered its attempt, and neither the client's reset before a byte (a
    /// scanner's) nor the sweep that counts a connection that stood has come yet. While
    /// one waits, a walk at the verdict's line waits too, under `--settle-successes`
    /// ([`super::SETTLE_SUCCESSES_GLOBAL`]). Saturates at 3; 0 once
    /// [`WAIT_EPOCHS`] sweeps passed since the latest (its slot was taken by another flow,
    /// and nothing will settle it).
    pub const fn waiting(cell: u64, epoch: u16) -> u8 {
        let since = epoch.wrapping_sub(((cell >> 23) & 0x1f) as u16) & 0x1f;
        if since > WAIT_EPOCHS {
            0
        } else {
            ((cell >> 21) & 0x3) as u8
        }
    }

    /// A cell of these parts, with no success waiting (see [`waits`]); `failures` at most
    /// 15.
    pub const fn pack(tag: u32, walk: i8, failures: u8, decided: bool, epoch: u16) -> u64 {
        ((tag as u64) << 32)
            | (((walk as u8 & 0xf) as u64) << 28)
            | ((decided as u64) << 20)
            | (((failures & 0xf) as u64) << 16)
            | epoch as u64
    }

    /// The bits of a cell that count its waiting successes, `waiting` of them (at most 3),
    /// the latest in sweep `waited_epoch`: OR them into a [`pack`]ed cell.
    pub const fn waits(waiting: u8, waited_epoch: u16) -> u64 {
        (((waited_epoch & 0x1f) as u64) << 23) | (((waiting & 0x3) as u64) << 21)
    }

    /// The bits of `cell` that count its waiting successes ([`waits`]), unchanged.
    pub const fn waits_of(cell: u64) -> u64 {
        cell & (0x7f << 21)
    }

    /// The epoch of the latest waiting success (its low 5 bits).
    pub const fn waited_epoch(cell: u64) -> u16 {
        ((cell >> 23) & 0x1f) as u16
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_part_round_trips() {
            for w in -8..=7i8 {
                for (n, wait, done) in [(0, 0, false), (15, 3, true), (7, 1, false)] {
                    let cell = pack(0xdead_beef, w, n, done, 0xfff3) | waits(wait, 0xfff1);
                    assert_eq!(tag(cell), 0xdead_beef);
                    assert_eq!(walk(cell), w);
                    assert_eq!((failures(cell), decided(cell)), (n, done));
                    assert_eq!(epoch(cell), 0xfff3);
                    assert_eq!(waiting(cell, 0xfff3), wait);
                    assert_eq!(waits_of(cell), waits(wait, 0xfff1));
                    assert_eq!(
                        cell & !waits_of(cell),
                        pack(0xdead_beef, w, n, done, 0xfff3)
                    );
                }
            }
        }

        #[test]
        fn a_waiting_success_is_forgotten_after_its_epochs() {
            let cell = pack(1, 4, 4, false, 30) | waits(1, 30);
            assert_eq!(waiting(cell, 30 + WAIT_EPOCHS), 1);
            assert_eq!(waiting(cell, 30 + WAIT_EPOCHS + 1), 0);
            // Across the wrap of the 5-bit epoch.
            let cell = pack(1, 4, 4, false, 65_535) | waits(2, 65_535);
            assert_eq!(waiting(cell, 1), 2);
        }
    }
}
