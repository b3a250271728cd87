//! The control socket of a running instance (`--block`): a Unix socket, root (or our own
//! user) only, one JSON request line and one JSON response line per connection, carried
//! out by the event loop; and the client side, `probe-detector block ...`.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::policy::block_control::{Request as BlockRequest, Response as BlockResponse};

/// A request from a client with the channel its answer goes back on.
pub type Pending = (BlockRequest, tokio::sync::oneshot::Sender<BlockResponse>);

/// No instance answers on the control socket, or it cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nobody listens (no instance with `--block`).
    #[error(
        "no probe-detector with --block is running (nothing listens on {0}; give --control-socket if it uses another)"
    )]
    NotRunning(PathBuf),
    /// The socket is root's.
    #[error("cannot reach {0}: permission denied (root only)")]
    Denied(PathBuf),
    /// Another instance listens there.
    #[error(
        "another probe-detector already listens on {0}: give this one another --control-socket"
    )]
    InUse(PathBuf),
    /// Something that is not a socket is at the path: it is left alone.
    #[error("{0} exists and is not a socket: it is left alone; give --control-socket another path")]
    NotASocket(PathBuf),
    /// Making, reaching or reading the socket failed.
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Malformed answer from the running instance.
    #[error("the running probe-detector answered {0:?}")]
    Answer(String),
    /// The running instance refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Answers one control-socket client: root (or our own user) only; one JSON request line
/// (2 s and 4 KiB at most), one JSON response line, carried out by the watch loop.
pub async fn serve_control(
    mut stream: tokio::net::UnixStream,
    loop_tx: tokio::sync::mpsc::Sender<Pending>,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    // SAFETY: geteuid has no preconditions.
    let ours = unsafe { libc::geteuid() };
    let response = match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 || cred.uid() == ours => {
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(&mut stream).take(4096);
            let read =
                tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await;
            match (read, serde_json::from_str::<BlockRequest>(&line)) {
                (Ok(Ok(_)), Ok(request)) => {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    if loop_tx.send((request, reply)).await.is_err() {
                        return;
                    }
                    match answer.await {
                        Ok(response) => response,
                        Err(_) => return,
                    }
                }
                (_, Err(err)) => BlockResponse {
                    error: Some(format!("bad request: {err}")),
                    ..BlockResponse::default()
                },
                (_, _) => return,
            }
        }
        Ok(cred) => {
            log::warn!("control socket: refused uid {} (root only)", cred.uid());
            BlockResponse {
                error: Some("root only".into()),
                ..BlockResponse::default()
            }
        }
        Err(_) => return,
    };
    let mut line = serde_json::to_string(&response).unwrap_or_else(|_| "{}".into());
    line.push('\n');
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(line.as_bytes())).await;
}

/// The control socket of a running instance: made at start, removed at exit.
pub struct ControlSocket {
    /// Where it listens.
    pub path: PathBuf,
    /// The listening socket.
    pub listener: std::os::unix::net::UnixListener,
}

impl ControlSocket {
    /// Listens on `path` (0600, in a directory made 0700 if missing). A socket file nobody
    /// listens on (left by a crash) is replaced; one somebody listens on is an error.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        let io_err = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        if let Ok(meta) = fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt as _;
            // Only a socket is ours to replace: any other file there stays, and we stop.
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotASocket(path.to_owned()));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.to_owned()));
            }
            fs::remove_file(path).map_err(io_err)?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        Ok(Self {
            path: path.to_owned(),
            listener,
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `probe-detector block ...`: sends one request to the instance listening on `socket`;
/// its answer, or why there is none.
pub fn request(socket: &Path, request: &BlockRequest) -> Result<BlockResponse, ControlError> {
    use std::io::{BufRead as _, BufReader, Write as _};
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|err| match err.kind() {
            io::ErrorKind::PermissionDenied => ControlError::Denied(socket.to_owned()),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ControlError::NotRunning(socket.to_owned())
            }
            _ => ControlError::Io {
                path: socket.to_owned(),
                source: err,
            },
        })?;
    let io_err = |source| ControlError::Io {
        path: socket.to_owned(),
        source,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io_err)?;
    // Serialising a plain enum of addresses and numbers cannot fail.
    let mut line = serde_json::to_string(request).unwrap_or_default();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    let response: BlockResponse =
        serde_json::from_str(&answer).map_err(|_| ControlError::Answer(answer.clone()))?;
    match response.error {
        Some(error) => Err(ControlError::Refused(error)),
        None => Ok(response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_socket(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "pd-control-{}-{name}/control.sock",
            std::process::id()
        ))
    }

    #[test]
    fn a_socket_is_private_replaces_a_stale_one_and_refuses_a_live_one() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = temp_socket("bind");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A crash leaves the file behind with nobody listening: it is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let socket = ControlSocket::bind(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(ControlError::InUse(_))
        ));
        drop(socket);
        assert!(!path.exists(), "removed at exit");
        // A file that is not a socket is never removed.
        fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(ControlError::NotASocket(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"precious");
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn nobody_listening_is_not_running() {
        let path = temp_socket("none");
        assert!(matches!(
            request(&path, &BlockRequest::List),
            Err(ControlError::NotRunning(_))
        ));
    }
}
