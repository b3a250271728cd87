//! stdout without stalling the daemon. When stdout is a pipe (`| jq`), it is written
//! non-blocking through an open file description of its own (the shell's stays as it
//! was); what the reader does not take waits in a bounded queue (`--stdout-queue-mib`);
//! records beyond it are dropped whole, counted, and said in one EVE `engine` record once
//! the queue has emptied. A terminal or a file is written as before, blocking.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    time::SystemTime,
};

use crate::{clock, output::rate_limit::engine_record};

/// See the module documentation.
pub struct Stdout {
    /// The pipe, non-blocking; `None`: stdout is written blocking.
    pipe: Option<File>,
    /// Bytes the reader has not taken yet (whole records, the first maybe begun).
    queue: VecDeque<u8>,
    /// Bytes the queue holds at most.
    cap: usize,
    /// Records dropped since the queue last emptied, not yet reported.
    dropping: u64,
    /// Records dropped so far.
    dropped: u64,
    /// The sensor name of the report record.
    host: String,
}

impl Stdout {
    /// stdout, non-blocking when it is a pipe, with a queue of `cap` bytes.
    pub fn open(cap: usize, host: &str) -> Self {
        Self::with_pipe(pipe_of_stdout(), cap, host)
    }

    fn with_pipe(pipe: Option<File>, cap: usize, host: &str) -> Self {
        Self {
            pipe,
            queue: VecDeque::new(),
            cap,
            dropping: 0,
            dropped: 0,
            host: host.to_owned(),
        }
    }

    /// Records dropped so far because the reader did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// What was queued and never written (the reader went away).
    pub fn take_unwritten(&mut self) -> Vec<u8> {
        self.queue.drain(..).collect()
    }

    /// Writes whole records (each ending in a newline), queueing what the reader does not
    /// take now; an error of kind `BrokenPipe` when the reader is gone.
    pub fn write_records(&mut self, records: &[u8]) -> io::Result<()> {
        if self.pipe.is_none() {
            let mut out = io::stdout().lock();
            return out.write_all(records).and_then(|()| out.flush());
        }
        self.drain()?;
        for record in records.split_inclusive(|&b| b == b'\n') {
            if self.queue.len() + record.len() <= self.cap {
                self.queue.extend(record);
            } else {
                self.dropping += 1;
                self.dropped += 1;
            }
        }
        self.drain()
    }

    /// At exit: waits up to `timeout` for the reader to take what is queued (a reader that
    /// is merely slow gets every record whole); true when nothing is left.
    pub fn finish(&mut self, timeout: std::time::Duration) -> io::Result<bool> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.drain()?;
            if self.queue.is_empty() && self.dropping == 0 {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Some(pipe) = self.pipe.as_ref().filter(|_| !left.is_zero()) else {
                return Ok(false);
            };
            let mut poll = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(pipe),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: one valid pollfd, for the duration of the call.
            unsafe { libc::poll(&raw mut poll, 1, ms) };
        }
    }

    /// Writes what waits, as far as the reader takes it; once the queue is empty after a
    /// drop, queues the record that says how many were dropped.
    pub fn drain(&mut self) -> io::Result<()> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(());
        };
        loop {
            if self.queue.is_empty() {
                if self.dropping == 0 {
                    return Ok(());
                }
                let report = dropped_record(self.dropping, self.cap, &self.host);
                self.dropping = 0;
                log::warn!("{}", report.1);
                self.queue.extend(report.0.as_bytes());
                continue;
            }
            let (front, _) = self.queue.as_slices();
            match pipe.write(front) {
                Ok(0) => return Ok(()),
                Ok(n) => drop(self.queue.drain(..n)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }
}

/// The EVE `engine` record (and the log line) that says `count` records were dropped.
fn dropped_record(count: u64, cap: usize, host: &str) -> (String, String) {
    let message = format!(
        "stdout: {count} records dropped: its reader did not keep up (queue of {} MiB, --stdout-queue-mib)",
        cap >> 20
    );
    let timestamp = clock::eve_timestamp(SystemTime::now());
    let record = engine_record(timestamp, host, "probe-detector-stdout", &message);
    (record, message)
}

/// stdout's pipe opened anew, non-blocking, when stdout is a pipe; `None` otherwise (a
/// terminal, a file: reopening a file would lose its append mode and offset).
fn pipe_of_stdout() -> Option<File> {
    let kind = std::fs::metadata("/proc/self/fd/1").ok()?.file_type();
    if !kind.is_fifo() {
        return None;
    }
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/proc/self/fd/1")
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Read as _, os::fd::FromRawFd as _};

    /// A pipe: its read end, and its write end non-blocking.
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        // SAFETY: fresh descriptors nobody else owns.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn record(i: usize) -> String {
        format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(200))
    }

    #[test]
    fn a_stalled_reader_costs_a_bounded_queue_and_is_told_what_it_missed() {
        let (mut reader, writer) = pipe();
        let mut out = Stdout::with_pipe(Some(writer), 256 << 10, "sensor");
        // Far more than the pipe (64 KiB) and the queue (256 KiB) hold: never blocks.
        let mut sent = 0;
        for i in 0..5000 {
            out.write_records(record(i).as_bytes()).unwrap();
            sent += 1;
        }
        assert!(out.dropped() > 0 && out.dropped() < sent);
        assert!(out.queue.len() <= 256 << 10);
        // The reader comes back: everything queued arrives, whole, then the report.
        let mut text = String::new();
        loop {
            out.drain().unwrap();
            let mut buf = vec![0; 1 << 16];
            match reader.read(&mut buf) {
                Ok(n) if n > 0 => text.push_str(std::str::from_utf8(&buf[..n]).unwrap()),
                _ if out.queue.is_empty() && out.dropping == 0 => break,
                _ => {}
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        let report = lines.last().unwrap();
        assert!(
            report.contains("\"event_type\":\"engine\"")
                && report.contains(&format!("{} records dropped", out.dropped())),
            "{report}"
        );
        let written = lines.len() - 1;
        assert_eq!(written as u64 + out.dropped(), sent);
        for line in &lines[..written] {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        // The first records are the ones kept: nothing reordered.
        assert!(lines[0].starts_with("{\"n\":0,"));
    }

    #[test]
    fn at_exit_a_slow_reader_gets_every_record_whole_and_a_stopped_one_holds_nothing_long() {
        let (mut reader, writer) = pipe();
        let mut out = Stdout::with_pipe(Some(writer), 4 << 20, "sensor");
        for i in 0..2000 {
            out.write_records(record(i).as_bytes()).unwrap();
        }
        assert!(!out.queue.is_empty(), "more than the pipe holds");
        // Stopped: given up after the timeout, the rest kept.
        let started = std::time::Instant::now();
        assert!(!out.finish(std::time::Duration::from_millis(100)).unwrap());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Slow but reading: every record arrives whole.
        let slow = std::thread::spawn(move || {
            let mut text = Vec::new();
            let mut buf = vec![0; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return text,
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
        });
        assert!(out.finish(std::time::Duration::from_secs(10)).unwrap());
        drop(out);
        let text = String::from_utf8(slow.join().unwrap()).unwrap();
        assert_eq!(text.lines().count(), 2000);
        assert!(text.ends_with(&record(1999)));
    }

    #[test]
    fn a_reader_gone_is_a_broken_pipe_and_the_queue_is_kept() {
        let (reader, writer) = pipe();
        let mut out = Stdout::with_pipe(Some(writer), 1 << 20, "sensor");
        for i in 0..1000 {
            out.write_records(record(i).as_bytes()).unwrap();
        }
        drop(reader);
        let err = out.write_records(record(1000).as_bytes()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(!out.take_unwritten().is_empty());
    }
}
