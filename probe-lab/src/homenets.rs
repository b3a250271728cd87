//! The gateway scenarios again, probe-detector alone with the home nets named by hand
//! (`--home-net` LAN): the matrix runs the gateway with the defaults (the home nets derived
//! from the router's routes), and this shows both give the same alerts.

use std::{
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;

use crate::{
    capture::{Probes, Recorder},
    detectors::Ours,
    matrix::{Context, slug, watch_point},
    scenarios::{Lab, SCENARIOS, Scenario},
    topology::{LAN, Topology, WAN_IF},
};

/// How long after a scan's end its alert may come.
const SETTLE: Duration = Duration::from_secs(5);

/// One gateway scenario with `--home-net`.
pub struct ExplicitRow {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// Probes on the wire before the first alert; `None`: no alert.
    pub probes: Option<usize>,
    /// Alerts raised.
    pub alerts: usize,
}

/// The gateway scenarios, in report order.
pub fn chosen(only: Option<&str>) -> Vec<&'static Scenario> {
    SCENARIOS
        .iter()
        .filter(|s| s.topology == Topology::Gateway)
        .filter(|s| only.is_none_or(|text| s.name.to_lowercase().contains(text)))
        .collect()
}

/// Runs `scenario` with probe-detector alone and `--home-net` naming the LAN.
pub fn run(
    ctx: &Context<'_>,
    lab: &Lab,
    scenario: &'static Scenario,
) -> anyhow::Result<ExplicitRow> {
    let (ns, dev, watched) = watch_point(lab, scenario.topology);
    let pcap = ctx
        .pcaps
        .join(format!("{}-home-net.pcap", slug(scenario.name)));
    let recorder = Recorder::start(ns, dev, &pcap)?;
    let mut ours = Ours::start(ns, ctx.binary, &["--iface", WAN_IF, "--home-net", LAN])?;
    let started = SystemTime::now();
    let sent = (scenario.run)(lab);
    let settled = Instant::now();
    while settled.elapsed() < SETTLE && (scenario.benign || ours.alerts().is_empty()) {
        thread::sleep(Duration::from_millis(100));
    }
    let stopped = ours.stop();
    recorder.stop()?;
    sent.with_context(|| format!("scenario {:?} with --home-net", scenario.name))?;
    stopped
        .with_context(|| format!("probe-detector --home-net in scenario {:?}", scenario.name))?;
    let mut alerts = ours.alerts();
    alerts.retain(|a| a.time >= started);
    let probes = Probes::read(&pcap, watched)?;
    Ok(ExplicitRow {
        scenario,
        probes: alerts
            .iter()
            .map(|a| a.time)
            .min()
            .map(|t| probes.before(t)),
        alerts: alerts.len(),
    })
}
