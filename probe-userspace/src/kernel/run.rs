//! Running the loaded programs without attaching them (`BPF_PROG_TEST_RUN`): a frame
//! through XDP or TC (replay, fuzzing, benchmarks, kernel tests) and the expiry sweep that
//! reports unanswered attempts.

use aya::{
    Ebpf,
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use probe_common::{EXPIRE_PROGRAM, PENDING_STATS_CURSOR, TC_PROGRAM, XDP_PROGRAM};

use super::{load::LoadError, maps::pending_stat};

/// The expiry program of a loaded object.
pub fn expire_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    ebpf.program_mut(EXPIRE_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(LoadError::Missing("XDP program probe_expire"))
}

/// Runs one whole expiry sweep: every pending attempt older than the timeout is reported
/// as unanswered (through the ring buffer) and its slot freed. The sweep runs in chunks;
/// `between` is called after each, to drain the ring buffer, so that even a table full of
/// expiring attempts loses no record. The walk happens in the kernel: one syscall per chunk
/// and a few tens of nanoseconds per slot.
pub fn expire_with(ebpf: &mut Ebpf, mut between: impl FnMut(&mut Ebpf)) -> Result<(), LoadError> {
    // BPF_PROG_TEST_RUN wants at least an Ethernet header of input; the program ignores it.
    let frame = [0u8; 14];
    loop {
        expire_program(ebpf)?
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..Default::default()
            })
            .map_err(|source| LoadError::Program {
                name: EXPIRE_PROGRAM,
                source,
            })?;
        between(ebpf);
        if pending_stat(ebpf, PENDING_STATS_CURSOR)? == 0 {
            return Ok(());
        }
    }
}

/// One whole expiry sweep, with nothing done between its chunks.
pub fn expire(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    expire_with(ebpf, |_| {})
}

/// The XDP program of a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    ebpf.program_mut(XDP_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(LoadError::Missing("XDP program probe_ingress"))
}

/// The TC program of a loaded object.
pub fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoadError> {
    ebpf.program_mut(TC_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(LoadError::Missing("TC program probe_egress"))
}

/// Runs `frame` once through the XDP program (`inbound`) or the TC program (outbound)
/// with BPF_PROG_TEST_RUN, nothing attached; returns the program's verdict.
pub fn test_run(ebpf: &mut Ebpf, frame: &[u8], inbound: bool) -> Result<u32, LoadError> {
    let options = TestRunOptions {
        data_in: Some(frame),
        ..Default::default()
    };
    let (name, result) = if inbound {
        (XDP_PROGRAM, xdp_program(ebpf)?.test_run(options))
    } else {
        (TC_PROGRAM, tc_program(ebpf)?.test_run(options))
    };
    result
        .map(|r| r.return_value)
        .map_err(|source| LoadError::Program { name, source })
}
