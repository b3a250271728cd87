//! The attack list (the seed's "attack-list.csv"): one CSV row per probed port of a
//! confirmed scanner, with a header, appended as probes are confirmed, size-bounded with
//! rotation (`PATH` → `PATH.1` → ... → `PATH.<keep>`, the oldest dropped).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::clock;

/// The CSV header.
pub const HEADER: &str = "time,source,destination,port,protocol,outcome,service,count";

/// One probed port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// When the probe's outcome was seen.
    pub time: SystemTime,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub port: u16,
    /// `TCP`, `UDP`, `ICMP`, ...
    pub protocol: String,
    /// `refused`, `unanswered`, ...
    pub outcome: &'static str,
    /// Well-known service name, empty when none.
    pub service: &'static str,
    /// How often the kernel saw this outcome when the row was written.
    pub count: u64,
}

impl Row {
    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{}\n",
            clock::rfc3339_micros(self.time),
            self.source,
            self.destination,
            self.port,
            field(&self.protocol),
            field(self.outcome),
            field(self.service),
            self.count
        )
    }
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// An attack list that cannot be written, worded for the operator.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the attack list {path}: {source}")]
pub struct AttackListError {
    path: String,
    source: io::Error,
}

/// The open attack list.
#[derive(Debug)]
pub struct AttackList {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: BufWriter<File>,
    size: u64,
}

impl AttackList {
    /// Opens (or creates, with its header) the list at `path`; rotates when a row would
    /// take it past `max_bytes`, keeping `keep` rotated files. Fails at once when the path
    /// cannot be written, so a mistake shows at start, not at the first scan.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self, AttackListError> {
        let fail = |source| AttackListError {
            path: path.display().to_string(),
            source,
        };
        let (out, size) = open_with_header(path).map_err(fail)?;
        Ok(Self {
            path: path.to_owned(),
            max_bytes: max_bytes.max(HEADER.len() as u64 + 1),
            keep,
            out,
            size,
        })
    }

    /// Appends rows (rotating as needed) and flushes them.
    pub fn append(&mut self, rows: &[Row]) -> Result<(), AttackListError> {
        for row in rows {
            let line = row.csv();
            if self.size + line.len() as u64 > self.max_bytes && self.size > HEADER.len() as u64 + 1
            {
                self.rotate().map_err(|source| self.error(source))?;
            }
            self.out
                .write_all(line.as_bytes())
                .map_err(|source| self.error(source))?;
            self.size += line.len() as u64;
        }
        self.out.flush().map_err(|source| self.error(source))
    }

    /// After a failed write (disk full, file gone): reopens the list, dropping what was
    /// buffered and not written, so the next rows start on a clean line of a file that
    /// exists again. Errors are the same as [`AttackList::open`]'s.
    pub fn reopen(&mut self) -> Result<(), AttackListError> {
        let (out, size) = open_with_header(&self.path).map_err(|source| self.error(source))?;
        // The old writer's buffer is dropped, not written: into_parts takes it without a
        // flush.
        let old = std::mem::replace(&mut self.out, out);
        drop(old.into_parts());
        self.size = size;
        Ok(())
    }

    fn error(&self, source: io::Error) -> AttackListError {
        AttackListError {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let numbered = |n: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            let _ = fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    fs::rename(&from, numbered(n + 1))?;
                }
            }
            fs::rename(&self.path, numbered(1))?;
        }
        let (out, size) = open_with_header(&self.path)?;
        self.out = out;
        self.size = size;
        Ok(())
    }
}

/// Opens `path` for appending, writing the header if the file is new or empty.
/// Opens (creating with mode 0640) the list for appending, refusing to follow a symbolic
/// link at `path` (someone who can write its directory could aim it at any file).
fn open_with_header(path: &Path) -> io::Result<(BufWriter<File>, u64)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut size = file.metadata()?.len();
    let mut out = BufWriter::new(file);
    if size == 0 {
        writeln!(out, "{HEADER}")?;
        out.flush()?;
        size = HEADER.len() as u64 + 1;
    }
    Ok((out, size))
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, time::UNIX_EPOCH};

    use super::*;

    fn row(port: u16) -> Row {
        Row {
            time: UNIX_EPOCH,
            source: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            destination: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            port,
            protocol: "TCP".into(),
            outcome: "refused",
            service: if port == 21 { "FTP" } else { "" },
            count: 1,
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pd-attack-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_list_is_private_and_never_follows_a_link() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = dir("private");
        let path = d.join("attack-list.csv");
        AttackList::open(&path, 1 << 20, 2).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // A link planted at the path is refused, and what it points at is untouched.
        let target = d.join("passwd");
        fs::write(&target, b"root:x:0:0\n").unwrap();
        let link = d.join("linked.csv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let Err(err) = AttackList::open(&link, 1 << 20, 2) else {
            panic!("a symlink must be refused");
        };
        assert!(err.to_string().contains("linked.csv"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"root:x:0:0\n");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn rows_follow_one_header() {
        let d = dir("rows");
        let path = d.join("attack-list.csv");
        let mut list = AttackList::open(&path, 1 << 20, 2).unwrap();
        list.append(&[row(21), row(23)]).unwrap();
        drop(list);
        // Reopening appends; the header is not written again.
        AttackList::open(&path, 1 << 20, 2)
            .unwrap()
            .append(&[row(25)])
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            "1970-01-01T00:00:00.000000Z,198.18.0.1,198.18.0.2,21,TCP,refused,FTP,1"
        );
        assert_eq!(lines.len(), 4);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_list_rotates_within_its_bound() {
        let d = dir("rotate");
        let path = d.join("attack-list.csv");
        let max = 400;
        let mut list = AttackList::open(&path, max, 2).unwrap();
        for port in 1..=100 {
            list.append(&[row(port)]).unwrap();
        }
        for p in [
            path.clone(),
            d.join("attack-list.csv.1"),
            d.join("attack-list.csv.2"),
        ] {
            let text = fs::read_to_string(&p).unwrap();
            assert!(
                text.len() as u64 <= max,
                "{} is {} bytes",
                p.display(),
                text.len()
            );
            assert!(text.starts_with(HEADER), "{} has no header", p.display());
        }
        assert!(
            !d.join("attack-list.csv.3").exists(),
            "only two rotated files are kept"
        );
        // The newest rows are in the current file.
        assert!(fs::read_to_string(&path).unwrap().contains(",100,TCP,"));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error_at_open() {
        let err = AttackList::open(Path::new("/nonexistent-dir/attack-list.csv"), 1 << 20, 1)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot write the attack list /nonexistent-dir/attack-list.csv:"),
            "{err}"
        );
    }

    #[test]
    fn fields_with_commas_are_quoted() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\", ok"), "\"say \"\"hi\"\", ok\"");
        assert_eq!(field("plain"), "plain");
    }
}
