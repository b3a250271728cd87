//! The event loop's place with the scheduler: a short time slice and, from the default
//! nice value, a higher weight (Linux 6.12 and later for the slice), so that the loop,
//! woken by a verdict, runs at once rather than after a busy task.
//!
//! Linux's fair scheduler (EEVDF) lets the running task finish its slice, about 1.5 ms on
//! a 2-CPU machine, before a task of the same weight that wakes gets the CPU; a task that
//! asked for a shorter slice (`sched_setattr`, `SCHED_OTHER`, `sched_runtime`) may take it
//! at once. In `perf sched` traces of the lab's nmap -sU cell, five runs with and five
//! without (2026-11-30, AMD EPYC 2 vCPU, a scanner, tcpdump and three other detectors
//! keeping both CPUs busy), the loop, woken by a verdict, waited for a CPU 0-1.52 ms
//! without it and at most 0.04 ms with it.
//!
//! The slice does not help when the loop's own last run overran it, which a scan's first
//! events do (134-151 µs on a cold cache): the scheduler keeps that debt and the loop is
//! not eligible to run until the others catch up. A trace of nmap -sS on an otherwise idle
//! machine showed the verdict's wakeup placed on the CPU where nmap's sends were being
//! processed, and the loop waiting 3.1 ms there while the other CPU idled. A nice value
//! of -10 weighs the loop's runs a ninth as much, so the debt is small and the loop runs
//! at once: the time from the deciding outcome to the start record's write
//! (`probe_detector_start_latency_seconds`), ten scans each, fell from 2.7-3.1 ms on
//! average (nmap -sS, most between 2.5 and 5 ms) and 0.85 ms (nmap -sU) to 0.12 ms, every
//! start within 0.25 ms. The loop's work is bounded per turn and a flood costs it little
//! (the kernel holds one-probe sources), so the weight cannot be turned against the host.
//!
//! A real-time policy (`SCHED_FIFO`, priority 1) was tried and is not used. It takes the
//! CPU from any task at once: in the lab (2026-11-30, AMD EPYC 2 vCPU, five runs each of
//! nmap -sT and -sU), the start was written at most 9 probes after the deciding one, against
//! up to 36 at nice -10. But the lab's reading thread, not the loop, was then the tail (70
//! probes to its read either way), and a loop that forged sources can wake (a verdict per
//! four forged probes) must not outrank the host's own work: at nice -10 it still shares
//! the CPU; at a real-time priority it would not.
//!
//! A nice value the process started with (`nice -n 5`; the service unit's `Nice=-10`,
//! set by systemd for a service without `CAP_SYS_NICE`) is kept; the slice is still asked
//! for. Threads the loop starts (the network reads) go back to nice 0 when it is negative
//! (`SCHED_FLAG_RESET_ON_FORK`). Without the privilege to lower the nice value
//! (`CAP_SYS_NICE` or `RLIMIT_NICE`), the slice alone is asked for; a kernel that refuses
//! even that changes nothing.

/// The slice asked for: the shortest the kernel grants (0.1 ms). A quiet wakeup's run is
/// shorter; a sweep, a flood's batch or a scan's first events run longer, and then give
/// the CPU back sooner.
pub const SLICE_NS: u64 = 100_000;

/// The nice value the loop asks for when it runs at the default (0).
pub const LOOP_NICE: i32 = -10;

/// `sched_attr.sched_flags`: threads started later do not inherit a negative nice value.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// `struct sched_attr` of `sched_setattr(2)`, in its first published size (48 bytes),
/// which every kernel with the call accepts.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const _: () = assert!(size_of::<SchedAttr>() == 48);

/// What the calling thread got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// Its nice value now.
    pub nice: i32,
    /// Whether that is the nice value it wanted ([`LOOP_NICE`] from 0, else its own).
    pub as_wanted: bool,
}

/// Asks for a [`SLICE_NS`] slice for the calling thread, keeping its policy
/// (`SCHED_OTHER`), with [`LOOP_NICE`] when its nice value is 0; with the slice alone when
/// the nice value may not be lowered. Returns the error the kernel gave, if any.
pub fn request() -> std::io::Result<Granted> {
    // SAFETY: getpriority has no memory arguments; for the calling thread it does not
    // fail.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let wanted = if nice == 0 { LOOP_NICE } else { nice };
    match set(wanted) {
        Ok(()) => Ok(Granted {
            nice: wanted,
            as_wanted: true,
        }),
        Err(err) if wanted != nice && err.raw_os_error() == Some(libc::EPERM) => {
            set(nice).map(|()| Granted {
                nice,
                as_wanted: false,
            })
        }
        Err(err) => Err(err),
    }
}

/// `sched_setattr` of the calling thread: `SCHED_OTHER` at `nice`, the short slice, reset
/// on fork.
fn set(nice: i32) -> std::io::Result<()> {
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: SCHED_FLAG_RESET_ON_FORK,
        nice,
        runtime: SLICE_NS,
        ..SchedAttr::default()
    };
    // SAFETY: `attr` is a valid, initialised sched_attr of the size it states, read by the
    // kernel during the call only; pid 0 is the calling thread; flags 0.
    let done = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice and the nice value the kernel reports for the calling thread
    /// (`sched_getattr`).
    fn now() -> (u64, i32) {
        let mut attr = SchedAttr::default();
        // SAFETY: `attr` is writable and 48 bytes long, the size passed; pid 0 is the
        // calling thread; flags 0.
        let done = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &raw mut attr,
                size_of::<SchedAttr>() as u32,
                0,
            )
        };
        assert_eq!(
            done,
            0,
            "sched_getattr: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(attr.policy, libc::SCHED_OTHER as u32, "the policy is kept");
        (attr.runtime, attr.nice)
    }

    /// The kernel's release, as (major, minor).
    fn kernel_release() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// The thread gets the short slice and, from nice 0 and with the privilege, the loop's
    /// nice value, keeping its policy; a thread it starts is back at nice 0.
    #[test]
    fn the_thread_gets_the_short_slice_and_the_weight_its_children_do_not() {
        if kernel_release() < (6, 12) {
            eprintln!("skipped: custom slices need Linux 6.12 or later");
            return;
        }
        let (before, granted, after, child) = std::thread::spawn(|| {
            let before = now();
            let granted = request().expect("the kernel takes the request");
            let after = now();
            let child = std::thread::spawn(now).join().expect("the child ran");
            (before, granted, after, child)
        })
        .join()
        .expect("the thread ran");
        assert_ne!(before.0, SLICE_NS, "the default slice is longer");
        assert_eq!(after.0, SLICE_NS);
        assert_eq!(after.1, granted.nice);
        if before.1 == 0 && granted.as_wanted {
            assert_eq!(granted.nice, LOOP_NICE);
        } else {
            assert_eq!(granted.nice, before.1, "an operator's nice value is kept");
        }
        assert_eq!(
            child.1,
            granted.nice.max(0),
            "no negative nice value is inherited"
        );
    }
}
