//! Which sensors saw each source, for a correlator's alerts (`alert.context.fleet`) and
//! its fleet blocks (backed by at least `--fleet-min-sensors` sensors). Bounded: the
//! sources seen longest ago go first.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::IpAddr,
};

use serde::Serialize;

/// The `alert.context.fleet` object of a correlator's alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetInfo {
    /// The correlator that wrote the alert.
    pub correlator: String,
    /// The sensors whose evidence the scan's sources left, sorted.
    pub sensors: Vec<String>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct FleetSources {
    correlator: String,
    names: Vec<String>,
    index: HashMap<String, u16>,
    seen: HashMap<IpAddr, BTreeSet<u16>>,
    order: VecDeque<IpAddr>,
    capacity: usize,
    min_sensors: usize,
}

impl FleetSources {
    /// A table of at most `capacity` sources, for the correlator `correlator`, whose fleet
    /// blocks need `min_sensors` sensors behind them.
    pub fn new(correlator: String, capacity: usize, min_sensors: usize) -> Self {
        Self {
            correlator,
            names: Vec::new(),
            index: HashMap::new(),
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            min_sensors,
        }
    }

    /// `sensor` saw `src`.
    pub fn note(&mut self, src: IpAddr, sensor: &str) {
        let id = match self.index.get(sensor) {
            Some(&id) => id,
            None => {
                let id = u16::try_from(self.names.len()).unwrap_or(u16::MAX);
                self.names.push(sensor.to_owned());
                self.index.insert(sensor.to_owned(), id);
                id
            }
        };
        match self.seen.get_mut(&src) {
            Some(sensors) => {
                sensors.insert(id);
            }
            None => {
                if self.seen.len() >= self.capacity
                    && let Some(old) = self.order.pop_front()
                {
                    self.seen.remove(&old);
                }
                self.seen.insert(src, BTreeSet::from([id]));
                self.order.push_back(src);
            }
        }
    }

    /// How many sensors saw `src`.
    pub fn sensors_of(&self, src: IpAddr) -> usize {
        self.seen.get(&src).map_or(0, BTreeSet::len)
    }

    /// True when enough sensors saw `src` for a fleet block.
    pub fn enough_sensors(&self, src: IpAddr) -> bool {
        self.sensors_of(src) >= self.min_sensors
    }

    /// The `alert.context.fleet` of a scan by `sources`.
    pub fn info<'a>(&self, sources: impl IntoIterator<Item = &'a IpAddr>) -> FleetInfo {
        let mut sensors: Vec<String> = sources
            .into_iter()
            .filter_map(|src| self.seen.get(src))
            .flatten()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|&id| self.names.get(usize::from(id)).cloned())
            .collect();
        sensors.sort();
        FleetInfo {
            correlator: self.correlator.clone(),
            sensors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_names_every_sensor_its_sources_reached() {
        let mut table = FleetSources::new("c1".into(), 2, 2);
        let a: IpAddr = "198.18.19.2".parse().unwrap();
        let b: IpAddr = "198.18.19.3".parse().unwrap();
        for sensor in ["h2", "h1", "h2"] {
            table.note(a, sensor);
        }
        table.note(b, "h3");
        assert_eq!(table.sensors_of(a), 2);
        assert!(table.enough_sensors(a) && !table.enough_sensors(b));
        assert_eq!(
            table.info(&[a, b]),
            FleetInfo {
                correlator: "c1".into(),
                sensors: vec!["h1".into(), "h2".into(), "h3".into()]
            }
        );
        // Bounded: a third source pushes out the first.
        table.note("198.18.19.4".parse().unwrap(), "h1");
        assert_eq!(table.sensors_of(a), 0);
        assert_eq!(table.sensors_of(b), 1);
    }
}
