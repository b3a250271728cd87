//! The block state file (`--block-state`): the blocks in force written at shutdown, with
//! wall-clock expiries, and read back at start, so a restart or a reboot lifts nothing
//! early.

use std::{net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

use crate::policy::block::Blocked;

/// A block as the state file keeps it across a restart (`--block-state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBlock {
    /// The blocked source.
    pub addr: IpAddr,
    /// When the block ends, in seconds since the Unix epoch (wall-clock time survives a
    /// reboot; the kernel's monotonic clock does not).
    pub until_unix_s: u64,
    /// Made by hand (restored as such).
    #[serde(default)]
    pub manual: bool,
}

/// Writes the blocks in force (`list`, at wall-clock time `now_unix_s`) to `path`: a
/// temporary file made 0600 and renamed over it, so a crash leaves the old file or the new.
pub fn save_state(path: &Path, list: &[Blocked], now_unix_s: u64) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let saved: Vec<SavedBlock> = list
        .iter()
        .map(|b| SavedBlock {
            addr: b.addr,
            until_unix_s: now_unix_s.saturating_add(b.expires_in_s),
            manual: b.manual,
        })
        .collect();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(serde_json::to_string(&saved).unwrap_or_default().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the blocks of a state file; none when there is no file yet.
pub fn load_state(path: &Path) -> std::io::Result<Vec<SavedBlock>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(std::io::Error::other),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_keeps_wall_clock_expiries() {
        let dir = std::env::temp_dir().join(format!("pd-block-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("blocks.json");
        assert_eq!(
            load_state(&path).unwrap(),
            Vec::new(),
            "no file yet: no blocks"
        );
        let list = vec![Blocked {
            addr: "198.18.0.1".parse().unwrap(),
            expires_in_s: 600,
            packets: 12,
            manual: true,
        }];
        save_state(&path, &list, 1_000).unwrap();
        save_state(&path, &list, 2_000).unwrap();
        assert_eq!(
            load_state(&path).unwrap(),
            vec![SavedBlock {
                addr: "198.18.0.1".parse().unwrap(),
                until_unix_s: 2_600,
                manual: true,
            }]
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "not json").unwrap();
        assert!(load_state(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
