//! Where records go (`--output`, repeatable): stdout (the default), a file (appended, mode
//! 0640, reopened on SIGHUP so logrotate can move it), or syslog: RFC 3164 to /dev/log as
//! local daemons expect it, or RFC 5424 to a Unix socket or a UDP address, one JSON record
//! per message as Suricata's syslog EVE output does. [`Sinks`] is a `Write` that takes
//! whole lines (one record each) and hands each to every output.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, Write},
    net::UdpSocket,
    os::unix::{fs::OpenOptionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    str::FromStr,
    time::SystemTime,
};

use crate::{clock, output::stdout::Stdout};

/// The syslog socket of local daemons.
const DEV_LOG: &str = "/dev/log";

/// One `--output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputSpec {
    /// `stdout`.
    Stdout,
    /// `file:PATH`.
    File(PathBuf),
    /// `syslog`, `syslog:PATH` or `syslog:HOST:PORT`.
    Syslog(SyslogTarget),
}

/// Where syslog messages go, and so in which format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTarget {
    /// /dev/log, RFC 3164 (what local daemons expect there).
    DevLog,
    /// A Unix datagram socket, RFC 5424.
    Unix(PathBuf),
    /// A UDP address (`HOST:PORT`), RFC 5424.
    Udp(String),
}

impl FromStr for OutputSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "stdout" => Ok(Self::Stdout),
            None if text == "syslog" => Ok(Self::Syslog(SyslogTarget::DevLog)),
            Some(("file", path)) if !path.is_empty() => Ok(Self::File(path.into())),
            Some(("syslog", target)) if target.starts_with('/') => {
                Ok(Self::Syslog(SyslogTarget::Unix(target.into())))
            }
            Some(("syslog", target))
                if target.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                }) =>
            {
                Ok(Self::Syslog(SyslogTarget::Udp(target.to_owned())))
            }
            _ => Err(format!(
                "{text:?} is not an output: stdout, file:PATH, syslog (/dev/log), syslog:/PATH/TO/SOCKET or syslog:HOST:PORT"
            )),
        }
    }
}

impl fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputSpec::Stdout => write!(f, "stdout"),
            OutputSpec::File(path) => write!(f, "file:{}", path.display()),
            OutputSpec::Syslog(SyslogTarget::DevLog) => write!(f, "syslog"),
            OutputSpec::Syslog(SyslogTarget::Unix(path)) => write!(f, "syslog:{}", path.display()),
            OutputSpec::Syslog(SyslogTarget::Udp(addr)) => write!(f, "syslog:{addr}"),
        }
    }
}

/// The syslog facilities, by name, with their codes.
const FACILITIES: [(&str, u8); 20] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Parses `--syslog-facility`: a facility name (`local5`, `daemon`, ...).
pub fn parse_facility(text: &str) -> Result<u8, String> {
    FACILITIES
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, code)| *code)
        .ok_or_else(|| {
            let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
            format!("{text:?} is not a syslog facility: {}", names.join(", "))
        })
}

/// How syslog messages are labelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogOptions {
    /// The facility code (`--syslog-facility`).
    pub facility: u8,
    /// The tag / APP-NAME (`--syslog-tag`).
    pub tag: String,
}

/// Informational: every record (as Suricata's EVE syslog output logs at `Info`).
const SEVERITY_INFO: u8 = 6;

/// One RFC 3164 message as a local syslog socket takes it:
/// `<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG`, the time in UTC.
pub fn rfc3164(facility: u8, tag: &str, pid: u32, time: SystemTime, msg: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // 2026-11-28T17:05:22.120650Z: month, day and time-of-day out of the RFC 3339 form.
    let stamp = clock::rfc3339_micros(time);
    let month = stamp[5..7]
        .parse::<usize>()
        .map_or("Jan", |m| MONTHS[(m - 1) % 12]);
    let day = stamp[8..10].trim_start_matches('0');
    format!(
        "<{}>{month} {day:>2} {} {tag}[{pid}]: {msg}",
        u16::from(facility) * 8 + u16::from(SEVERITY_INFO),
        &stamp[11..19]
    )
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - - MSG`.
pub fn rfc5424(
    facility: u8,
    host: &str,
    tag: &str,
    pid: u32,
    time: SystemTime,
    msg: &str,
) -> String {
    format!(
        "<{}>1 {} {host} {tag} {pid} - - {msg}",
        u16::from(facility) * 8 + u16::from(SEVERITY_INFO),
        clock::rfc3339_micros(time)
    )
}

/// An output that cannot be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("output {output}: {source}")]
pub struct SinkError {
    /// The output, as `--output` names it.
    pub output: String,
    /// Why.
    pub source: io::Error,
}

/// A syslog socket, connected.
enum SyslogSocket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

impl SyslogSocket {
    fn connect(target: &SyslogTarget) -> io::Result<Self> {
        Ok(match target {
            SyslogTarget::DevLog => Self::unix(Path::new(DEV_LOG))?,
            SyslogTarget::Unix(path) => Self::unix(path)?,
            SyslogTarget::Udp(addr) => {
                let socket = UdpSocket::bind(if addr.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })?;
                socket.connect(addr.as_str())?;
                Self::Udp(socket)
            }
        })
    }

    fn unix(path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Self::Unix(socket))
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.send(message).map(drop),
            Self::Udp(s) => s.send(message).map(drop),
        }
    }
}

/// One open output.
enum Sink {
    Stdout(Stdout),
    File {
        path: PathBuf,
        file: File,
    },
    Syslog {
        target: SyslogTarget,
        socket: SyslogSocket,
    },
}

/// Every output of a run; see the module documentation.
pub struct Sinks {
    sinks: Vec<(String, Sink)>,
    syslog: SyslogOptions,
    host: String,
    pid: u32,
    /// A record not yet ended by its newline.
    partial: Vec<u8>,
    /// What stdout, the only output, could not write when its reader went away.
    unwritten: Vec<u8>,
    /// Records each output lost to write errors (disk full, syslog daemon gone), by output
    /// name; and the outputs failing now (said once per streak).
    lost: std::collections::BTreeMap<String, u64>,
    failing: std::collections::BTreeSet<String>,
}

impl Sinks {
    /// Opens every output (a file is created if missing; a syslog socket must exist):
    /// done before anything is loaded, so a bad output fails at once.
    pub fn open(
        specs: &[OutputSpec],
        syslog: SyslogOptions,
        host: &str,
        stdout_queue: usize,
    ) -> Result<Self, SinkError> {
        let mut sinks = Vec::new();
        for spec in specs {
            let name = spec.to_string();
            let error = |source| SinkError {
                output: name.clone(),
                source,
            };
            let sink = match spec {
                OutputSpec::Stdout => Sink::Stdout(Stdout::open(stdout_queue, host)),
                OutputSpec::File(path) => Sink::File {
                    path: path.clone(),
                    file: open_file(path).map_err(error)?,
                },
                OutputSpec::Syslog(target) => Sink::Syslog {
                    target: target.clone(),
                    socket: SyslogSocket::connect(target).map_err(error)?,
                },
            };
            sinks.push((name, sink));
        }
        Ok(Self {
            sinks,
            syslog,
            host: host.to_owned(),
            pid: std::process::id(),
            partial: Vec::new(),
            unwritten: Vec::new(),
            lost: std::collections::BTreeMap::new(),
            failing: std::collections::BTreeSet::new(),
        })
    }

    /// Records lost to write errors, by output (only outputs that lost some).
    pub fn lost(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.lost
    }

    /// Records stdout dropped because its reader did not keep up.
    pub fn stdout_dropped(&self) -> u64 {
        self.sinks
            .iter()
            .map(|(_, sink)| match sink {
                Sink::Stdout(out) => out.dropped(),
                _ => 0,
            })
            .sum()
    }

    /// What could not be written: stdout, the only output, lost its reader, or did not
    /// take its queue in time at exit.
    pub fn take_unwritten(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.unwritten)
    }

    /// At exit: gives stdout's reader up to `timeout` to take what is queued; what it does
    /// not take, when stdout is the only output, is kept for the log.
    pub fn finish(&mut self, timeout: std::time::Duration) {
        let only = self.only_stdout();
        for (_, sink) in &mut self.sinks {
            if let Sink::Stdout(out) = sink
                && !matches!(out.finish(timeout), Ok(true))
                && only
            {
                self.unwritten.extend(out.take_unwritten());
            }
        }
    }

    /// True when stdout is the only output (its reader going away ends the run).
    pub fn only_stdout(&self) -> bool {
        matches!(self.sinks.as_slice(), [(_, Sink::Stdout(_))])
    }

    /// SIGHUP: reopens the files (logrotate moved them) and reconnects the syslog sockets.
    pub fn reopen(&mut self) -> Result<(), SinkError> {
        for (name, sink) in &mut self.sinks {
            let error = |source| SinkError {
                output: name.clone(),
                source,
            };
            match sink {
                Sink::Stdout(_) => {}
                Sink::File { path, file } => *file = open_file(path).map_err(error)?,
                Sink::Syslog { target, socket } => {
                    *socket = SyslogSocket::connect(target).map_err(error)?;
                }
            }
        }
        Ok(())
    }

    /// Writes whole records (each ending in a newline) to every output. When stdout's
    /// reader goes away (`| head`), stdout is dropped from the outputs; when it was the only
    /// one, the error says so ([`io::ErrorKind::BrokenPipe`]): the run is over.
    ///
    /// A file or syslog output that fails (disk full, the daemon gone) never stops the run:
    /// the records it could not take are counted as lost ([`Sinks::lost`]), the failure is
    /// logged once, and the output is reopened and tried again with the next records.
    fn write_records(&mut self, records: &[u8]) -> io::Result<()> {
        let now = SystemTime::now();
        let mut reader_gone = false;
        let count = records.iter().filter(|&&b| b == b'\n').count() as u64;
        for (name, sink) in &mut self.sinks {
            let named = |err: io::Error| io::Error::new(err.kind(), format!("{name}: {err}"));
            let written = match sink {
                Sink::Stdout(out) => match out.write_records(records) {
                    Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                        // Kept for the log, when stdout was the only output.
                        self.unwritten.extend(out.take_unwritten());
                        self.unwritten.extend_from_slice(records);
                        reader_gone = true;
                        Ok(())
                    }
                    other => other.map_err(named),
                },
                Sink::File { file, path } => file.write_all(records).map_err(|err| {
                    // Written on in a new file if this one was removed or can be again.
                    if let Ok(new) = open_file(path) {
                        *file = new;
                    }
                    named(err)
                }),
                Sink::Syslog { target, socket } => {
                    let format = |msg: &str| match target {
                        SyslogTarget::DevLog => {
                            rfc3164(self.syslog.facility, &self.syslog.tag, self.pid, now, msg)
                        }
                        _ => rfc5424(
                            self.syslog.facility,
                            &self.host,
                            &self.syslog.tag,
                            self.pid,
                            now,
                            msg,
                        ),
                    };
                    send_syslog(target, socket, records, format).map_err(named)
                }
            };
            match written {
                Ok(()) => {
                    if self.failing.remove(name.as_str()) {
                        log::warn!(
                            "output {name} written again ({} records lost so far)",
                            self.lost.get(name.as_str()).copied().unwrap_or(0)
                        );
                    }
                }
                Err(err) => {
                    *self.lost.entry(name.clone()).or_default() += count;
                    if self.failing.insert(name.clone()) {
                        log::error!(
                            "output {err}: {count} records lost; trying again with the next records"
                        );
                    }
                }
            }
        }
        if reader_gone {
            self.sinks
                .retain(|(_, sink)| !matches!(sink, Sink::Stdout(_)));
            if !self.sinks.is_empty() {
                self.unwritten.clear();
            }
            if self.sinks.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "stdout's reader went away",
                ));
            }
            log::warn!("stdout's reader went away: records go on to the other outputs");
        }
        Ok(())
    }
}

impl Write for Sinks {
    /// Takes everything; hands on the complete lines, keeps a partial one for later.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
            let rest = self.partial.split_off(end + 1);
            let complete = std::mem::replace(&mut self.partial, rest);
            self.write_records(&complete)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        for (_, sink) in &mut self.sinks {
            match sink {
                // What waits for a slow reader; a reader gone is found, and handled, by
                // the next write.
                Sink::Stdout(out) => match out.drain() {
                    Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
                    other => other?,
                },
                Sink::File { file, .. } => file.flush()?,
                Sink::Syslog { .. } => {}
            }
        }
        Ok(())
    }
}

/// Sends each record as one syslog message (`format` makes it); a failed send connects
/// again once (the daemon restarted) and then gives up.
fn send_syslog(
    target: &SyslogTarget,
    socket: &mut SyslogSocket,
    records: &[u8],
    format: impl Fn(&str) -> String,
) -> io::Result<()> {
    for record in records.split(|&b| b == b'\n').filter(|r| !r.is_empty()) {
        let message = format(&String::from_utf8_lossy(record));
        if socket.send(message.as_bytes()).is_err() {
            *socket = SyslogSocket::connect(target)?;
            socket.send(message.as_bytes())?;
        }
    }
    Ok(())
}

/// Opens a record file for appending, created with mode 0640.
fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt as _, time::Duration};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn outputs_parse_and_print_back() {
        for text in [
            "stdout",
            "file:/var/log/probe-detector/eve.json",
            "syslog",
            "syslog:/run/rsyslog/eve.sock",
            "syslog:198.18.0.9:514",
            "syslog:[2001:db8::9]:514",
        ] {
            let spec: OutputSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "syslog:198.18.0.9:514".parse(),
            Ok(OutputSpec::Syslog(SyslogTarget::Udp(
                "198.18.0.9:514".into()
            )))
        );
        for bad in [
            "",
            "file:",
            "stderr",
            "syslog:host",
            "syslog:host:0",
            "tcp:1.2.3.4:5",
        ] {
            let err = bad.parse::<OutputSpec>().unwrap_err();
            assert!(err.contains("is not an output"), "{bad}: {err}");
        }
    }

    #[test]
    fn facilities_have_their_codes() {
        assert_eq!(parse_facility("local5"), Ok(21));
        assert_eq!(parse_facility("daemon"), Ok(3));
        assert!(parse_facility("local9").unwrap_err().contains("local7"));
    }

    #[test]
    fn messages_follow_the_rfcs() {
        // 2026-11-28T17:05:22Z, local5.info = 21 * 8 + 6 = 174.
        let time = at(1_795_885_522);
        assert_eq!(
            rfc3164(21, "probe-detector", 42, time, "{\"a\":1}"),
            "<174>Nov 28 17:05:22 probe-detector[42]: {\"a\":1}"
        );
        assert_eq!(
            rfc3164(3, "pd", 1, at(1_795_132_800), "x"),
            "<30>Nov 20 00:00:00 pd[1]: x",
            "a one-digit day is padded with a space"
        );
        assert_eq!(
            rfc5424(21, "edge-1", "probe-detector", 42, time, "{}"),
            "<174>1 2026-11-28T17:05:22.000000Z edge-1 probe-detector 42 - - {}"
        );
    }

    #[test]
    fn a_file_output_is_private_and_reopened_after_a_move() {
        let dir = std::env::temp_dir().join(format!("pd-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("eve.json");
        let options = SyslogOptions {
            facility: 21,
            tag: "probe-detector".into(),
        };
        let mut sinks =
            Sinks::open(&[OutputSpec::File(path.clone())], options, "h", 1 << 20).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // Records arrive in pieces; only whole lines are written.
        sinks.write_all(b"{\"n\":1}\n{\"n\"").unwrap();
        sinks.write_all(b":2}\n").unwrap();
        sinks.flush().unwrap();
        // logrotate moves the file, then SIGHUP reopens it.
        std::fs::rename(&path, dir.join("eve.json.1")).unwrap();
        sinks.write_all(b"{\"n\":3}\n").unwrap();
        sinks.reopen().unwrap();
        sinks.write_all(b"{\"n\":4}\n").unwrap();
        sinks.flush().unwrap();
        let old = std::fs::read_to_string(dir.join("eve.json.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(old, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
        assert_eq!(new, "{\"n\":4}\n");
    }

    #[test]
    fn an_unreachable_output_fails_at_open_naming_it() {
        let options = SyslogOptions {
            facility: 21,
            tag: "t".into(),
        };
        let spec = OutputSpec::Syslog(SyslogTarget::Unix("/nonexistent/pd.sock".into()));
        let err = Sinks::open(&[spec], options, "h", 1 << 20).err().unwrap();
        assert!(
            err.to_string()
                .starts_with("output syslog:/nonexistent/pd.sock: "),
            "{err}"
        );
    }
}
