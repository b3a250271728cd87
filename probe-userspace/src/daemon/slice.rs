//! The event loop's short time slice: a request to the scheduler (Linux 6.12 and later)
//! that lets the loop, woken by a verdict, preempt a busy task rather than wait out its
//! slice.
//!
//! Linux's fair scheduler (EEVDF) lets the running task finish its slice, about 1.5 ms on
//! a 2-CPU machine, before a task of the same weight that wakes gets the CPU; a task that
//! asked for a shorter slice (`sched_setattr`, `SCHED_OTHER`, `sched_runtime`) may take it
//! at once. In `perf sched` traces of the lab's nmap -sU cell, five runs with and five
//! without (2026-11-30, AMD EPYC 2 vCPU, a scanner, tcpdump and three other detectors
//! keeping both CPUs busy), the loop, woken by the verdict, waited for a CPU 0-1.52 ms
//! without it (0.83 and 1.52 ms in two runs) and at most 0.04 ms with it. It cannot help
//! when the loop's own last run overran the slice (the scheduler keeps that debt: an
//! ftrace showed the loop, after a run of 134 µs, waiting 628 µs with it). Kernels before
//! 6.12 take the call and ignore the slice; a kernel that refuses it changes nothing
//! (logged at debug).

/// The slice asked for: the shortest the kernel grants (0.1 ms). A quiet wakeup's run is
/// shorter; a sweep, a flood's batch or a scan's first events (134 µs in one trace) run
/// longer, and then give the CPU back sooner.
pub const SLICE_NS: u64 = 100_000;

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

/// Asks for a [`SLICE_NS`] slice for the calling thread (and the threads it starts
/// later), keeping its policy (`SCHED_OTHER`) and its nice value. Returns the error the
/// kernel gave, if any.
pub fn request() -> std::io::Result<()> {
    // SAFETY: getpriority has no memory arguments; for the calling thread it does not
    // fail.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
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

    /// The slice the kernel reports for the calling thread (`sched_getattr`).
    fn slice_now() -> u64 {
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
        attr.runtime
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

    /// The thread gets the short slice, and keeps its policy.
    #[test]
    fn the_thread_gets_the_short_slice() {
        if kernel_release() < (6, 12) {
            eprintln!("skipped: custom slices need Linux 6.12 or later");
            return;
        }
        let (before, after) = std::thread::spawn(|| {
            let before = slice_now();
            request().expect("the kernel takes the request");
            (before, slice_now())
        })
        .join()
        .expect("the thread ran");
        assert_ne!(before, SLICE_NS, "the default slice is longer");
        assert_eq!(after, SLICE_NS);
    }
}
