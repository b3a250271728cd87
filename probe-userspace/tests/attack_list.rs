//! The attack list and the file output on a disk that fills up: rows and records that cannot
//! be written are counted and the run goes on; once there is room again, they are written
//! again. Mounts a 64 KiB
//! tmpfs on a directory of its own (root), unmounted at the end.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
    process::Command,
    time::Duration,
};

use probe_netlab::require_root;
use probe_userspace::{
    detect::{Engine, EngineConfig},
    event::{Outcome, Probe, ProbeType},
    output::{
        Blocking, Clock, Pipeline, PipelineConfig,
        attack_list::AttackList,
        sink::{OutputSpec, Sinks, SyslogOptions},
    },
};

fn refused(src: u8, port: u16, at: Duration) -> Probe {
    Probe {
        timestamp: at,
        src: IpAddr::V4(Ipv4Addr::new(198, 18, 3, src)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        src_port: 40_000,
        dst_port: port,
        proto: 6,
        probe: ProbeType::TcpSyn,
        outcome: Outcome::Refused,
        tcp_flags: 0x02,
        ttl: 64,
        icmp: None,
        ifindex: 1,
        src_mac: [0; 6],
        kernel_verdict: false,
        kernel_blocked: false,
    }
}

/// A 64 KiB tmpfs mounted on a directory of its own; unmounted and removed when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs");
        Self(dir)
    }

    /// Fills it, but for a few KiB; the filler is removed by [`Tmpfs::free`].
    fn fill(&self) {
        std::fs::write(self.0.join("filler"), vec![0u8; 60 * 1024]).ok();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_disk_loses_rows_counted_never_the_run() {
    if !require_root("a_full_disk_loses_rows_counted_never_the_run") {
        return;
    }
    let tmpfs = Tmpfs::mount("pd-full-disk");
    let dir = tmpfs.0.clone();
    let list = AttackList::open(&dir.join("attack-list.csv"), 1 << 30, 1).unwrap();
    let config = PipelineConfig {
        probes: false,
        alert_rate_limit: 0,
        alert_rate_per_source: 0,
        fixed_iface: Some("test".into()),
        host: "sensor".into(),
        clock: Clock::Unix,
    };
    let mut pipeline = Pipeline::new(
        Engine::new(EngineConfig::default()),
        config,
        Some(list),
        Blocking::Off,
        Vec::new(),
    );
    let scan = |pipeline: &mut Pipeline<Vec<u8>>, src: u8, from: u16, at: u64| {
        for port in from..from + 200 {
            let probe = refused(src, port, Duration::from_secs(at));
            pipeline.observe(&probe, probe.timestamp);
        }
        pipeline.flush(|_| Some(1))
    };
    tmpfs.fill();
    assert!(
        scan(&mut pipeline, 1, 1, 1).is_ok(),
        "a full disk is not fatal"
    );
    assert!(
        pipeline.stats().attack_list_lost > 0,
        "{:?}",
        pipeline.stats()
    );
    // Room again: the next scanner's rows are written.
    tmpfs.free();
    assert!(scan(&mut pipeline, 2, 1, 2).is_ok());
    let text = std::fs::read_to_string(dir.join("attack-list.csv")).unwrap();
    assert!(
        text.lines().filter(|l| l.contains(",198.18.3.2,")).count() >= 190,
        "rows after the disk had room again"
    );
    assert!(
        text.lines().all(|l| l.split(',').count() == 8),
        "whole lines only"
    );
    assert_eq!(pipeline.stats().attack_list_failures, 0, "written again");
    // Closed before the unmount, or the tmpfs stays mounted ("target is busy").
    drop(pipeline);
    drop(tmpfs);
}

#[test]
fn a_full_disk_under_the_file_output_loses_records_counted_never_the_run() {
    if !require_root("a_full_disk_under_the_file_output_loses_records_counted_never_the_run") {
        return;
    }
    let tmpfs = Tmpfs::mount("pd-full-eve");
    let path = tmpfs.0.join("eve.json");
    let output = OutputSpec::File(path.clone());
    let mut sinks = Sinks::open(
        std::slice::from_ref(&output),
        SyslogOptions {
            facility: 21,
            tag: "probe-detector".into(),
        },
        "sensor",
        1 << 20,
    )
    .unwrap();
    let record = |n: usize| format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(100));
    tmpfs.fill();
    for n in 0..200 {
        sinks
            .write_all(record(n).as_bytes())
            .expect("a full disk is not fatal");
    }
    let lost = sinks.lost().get(&output.to_string()).copied().unwrap_or(0);
    assert!(lost > 0, "counted: {:?}", sinks.lost());
    tmpfs.free();
    sinks.write_all(record(1000).as_bytes()).unwrap();
    sinks.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.ends_with(&record(1000)),
        "written again once there is room"
    );
    assert_eq!(
        sinks.lost().get(&output.to_string()).copied(),
        Some(lost),
        "nothing more lost"
    );
    drop(sinks);
    drop(tmpfs);
}
