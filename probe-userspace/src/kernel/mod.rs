//! The eBPF object in the kernel: loading it, attaching its XDP (ingress) and TC (egress)
//! programs to interfaces and detaching them, running them without attaching them, reading
//! their maps, and checking privileges first. Callers use the items re-exported here.

mod attach;
mod load;
mod maps;
mod privileges;
mod run;
mod summaries;

pub use attach::{Attachment, XdpModeArg, attach, detach, detach_leftovers, remove_xdp};
pub use load::{EBPF_OBJECT, KernelConfig, LoadError, RING_RECORD_BYTES, load, load_object};
pub use maps::{
    counter_value, counters, outcome_count, pending_occupancy, pending_stat, pending_walked,
    set_home_nets, set_local,
};
pub use privileges::{PrivilegeError, check_privileges};
pub use run::{expire, expire_program, expire_with, tc_program, test_run, xdp_program};
pub use summaries::SummaryReader;
