//! A private syslog for the lab and the lab tests: an rsyslogd on a socket in a work
//! directory, bound over /dev/log only inside the mount namespaces of the programs it
//! starts (RFC 3164, as local daemons take it), with a second socket that takes any format
//! (RFC 5424), and kernel messages (the iptables LOG lines psad reads) from /dev/kmsg
//! without consuming them. The machine's own /dev/log is never touched.

use std::{
    fs,
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

/// Lets iptables LOG lines from inside network namespaces reach the kernel log.
const NF_LOG_ALL_NETNS: &str = "/proc/sys/net/netfilter/nf_log_all_netns";

/// A running private rsyslogd.
pub struct Syslog {
    child: Child,
    socket: PathBuf,
    socket5424: PathBuf,
    log: PathBuf,
    kern: PathBuf,
    /// /dev/log did not exist: an empty file stands there as the bind-mount target.
    placeholder: bool,
    old_nf_log: Option<String>,
}

/// One line of the lab's syslog.
#[derive(Clone, Debug)]
pub struct Line {
    /// When rsyslogd received it.
    pub time: SystemTime,
    /// The program, without its `[pid]`.
    pub program: String,
    /// The message.
    pub message: String,
}

impl Syslog {
    /// Starts rsyslogd with its files under `dir`, and turns on iptables logging from
    /// network namespaces (restored when dropped).
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let socket = dir.join("log.sock");
        let socket5424 = dir.join("log5424.sock");
        let _ = fs::remove_file(&socket5424);
        let log = dir.join("syslog.log");
        let kern = dir.join("kern.log");
        let _ = fs::remove_file(&socket);
        let config = dir.join("rsyslog.conf");
        fs::write(
            &config,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" RateLimit.Interval="0")
input(type="imuxsock" Socket="{socket5424}" RateLimit.Interval="0" UseSpecialParser="off" ParseHostname="on")
module(load="imkmsg")
template(name="precise" type="string" string="%timegenerated:::date-rfc3339% %programname% %msg%\n")
kern.* action(type="omfile" file="{kern}" template="RSYSLOG_TraditionalFileFormat")
*.* action(type="omfile" file="{log}" template="precise")
"#,
                dir = dir.display(),
                socket = socket.display(),
                socket5424 = socket5424.display(),
                kern = kern.display(),
                log = log.display(),
            ),
        )?;
        let placeholder = !Path::new("/dev/log").exists();
        if placeholder {
            fs::write("/dev/log", b"").context("cannot create /dev/log as a bind-mount target")?;
        }
        let old_nf_log = fs::read_to_string(NF_LOG_ALL_NETNS).ok();
        fs::write(NF_LOG_ALL_NETNS, b"1").context("cannot set net.netfilter.nf_log_all_netns")?;
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start rsyslogd")?;
        let syslog = Self {
            child,
            socket,
            socket5424,
            log,
            kern,
            placeholder,
            old_nf_log,
        };
        let started = Instant::now();
        while !syslog.socket.exists() || !syslog.socket5424.exists() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("rsyslogd made no socket in 10 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(syslog)
    }

    /// The socket that takes messages in any format (RFC 5424 included), not bound over
    /// /dev/log.
    pub fn socket_5424(&self) -> &Path {
        &self.socket5424
    }

    /// The file of kernel messages, in the traditional syslog format psad reads.
    pub fn kern_log(&self) -> &Path {
        &self.kern
    }

    /// `PROGRAM ARGS` inside `ns`, with /dev/log bound to this syslog in the private mount
    /// namespace `ip netns exec` makes.
    pub fn exec(&self, ns: &Netns, program: &str, args: &[&str]) -> Command {
        let socket = self.socket.display().to_string();
        let mut all = vec![
            "-c",
            r#"mount --bind "$0" /dev/log && exec "$@""#,
            socket.as_str(),
            program,
        ];
        all.extend_from_slice(args);
        ns.exec("sh", &all)
    }

    /// Where the log ends now.
    pub fn offset(&self) -> u64 {
        fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The lines written since `offset`.
    pub fn lines_since(&self, offset: u64) -> anyhow::Result<Vec<Line>> {
        let mut file = match fs::File::open(&self.log) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err).context("cannot read the lab's syslog"),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(text.lines().filter_map(parse_line).collect())
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.placeholder {
            let _ = fs::remove_file("/dev/log");
        }
        if let Some(old) = &self.old_nf_log {
            let _ = fs::write(NF_LOG_ALL_NETNS, old.trim().as_bytes());
        }
    }
}

/// `2026-11-21T07:38:46.982011+00:00 psad scan detected ...`: the time rsyslogd received
/// it, the program's name (RFC 3164 tag or RFC 5424 APP-NAME, without a pid), the message.
fn parse_line(line: &str) -> Option<Line> {
    let (stamp, rest) = line.split_once(' ')?;
    let (program, message) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Line {
        time: parse_rfc3339(stamp)?,
        program: program.to_owned(),
        message: message.trim_start().to_owned(),
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM|±HHMM)` to a system time (syslog's RFC 3339, and
/// EVE's `+0000`).
pub fn parse_rfc3339(stamp: &str) -> Option<SystemTime> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (clock, offset) = time.split_at(time.find(['Z', '+', '-'])?);
    let offset_s = match offset {
        "Z" => 0,
        _ => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let zone = offset.get(1..)?;
            let (h, mm) = zone.split_once(':').or_else(|| Some(zone.split_at(2)))?;
            sign * (num(h)? * 3600 + num(mm)? * 60)
        }
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut t = hms.split(':');
    let (h, mi, s) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    let nanos = format!("{frac:0<9}").get(..9)?.parse::<u32>().ok()?;
    let secs = days_from_civil(y, m, day) * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_are_parsed_with_their_precise_time() {
        let line = parse_line(
            "2026-11-21T07:38:46.982011+00:00 portsentry  attackalert: TCP SYN/Normal scan",
        )
        .unwrap();
        assert_eq!(line.program, "portsentry");
        assert_eq!(line.message, "attackalert: TCP SYN/Normal scan");
        let since = line.time.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since, Duration::new(1_795_246_726, 982_011_000));
        // The same instant written in another zone.
        let east = parse_rfc3339("2026-11-21T09:38:46.982011+02:00").unwrap();
        assert_eq!(east, line.time);
        // EVE writes its offset without a colon.
        let eve = parse_rfc3339("2026-11-21T07:18:19.902994+0000").unwrap();
        let since = eve.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since.as_secs(), 1_795_245_499);
        assert_eq!(since.subsec_micros(), 902_994);
        assert_eq!(parse_rfc3339("yesterday"), None);
        let leap = parse_rfc3339("2024-02-29T00:00:00.5+0000").unwrap();
        let since = leap.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since.as_secs(), 1_709_164_800);
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert!(parse_line("nostamp").is_none());
    }
}
