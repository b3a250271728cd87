//! The command line and the configuration file, through the real binary: what an operator
//! types, what it prints, and the one-line errors with their exit status. Nothing here
//! loads a program or needs privileges.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probe-detector"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A config file holding `text`.
fn config_file(name: &str, text: &str) -> TempFile {
    let path =
        std::env::temp_dir().join(format!("probe-detector-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    TempFile(path)
}

/// The value of `key` in printed configuration.
fn value_of<'a>(printed: &'a str, key: &str) -> Option<&'a str> {
    printed
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key} = ")))
}

#[test]
fn print_config_shows_every_setting_with_its_default() {
    let out = run(&["--print-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    for (key, default) in [
        ("scan-ports", "10"),
        ("scan-window", "60"),
        ("sweep-hosts", "16"),
        ("trw", "\"auto\""),
        ("slow-failed", "8"),
        ("slow-horizon", "3600"),
        ("crowd-sources", "3"),
        ("group-v4", "32"),
        ("probes", "false"),
        ("iface", "[]"),
    ] {
        assert_eq!(value_of(&printed, key), Some(default), "{key}:\n{printed}");
    }
    // Documented: the flag's help above the key, choices listed.
    assert!(printed.contains("# One of: auto, host, service, off.\ntrw = \"auto\""));
    assert!(printed.contains("\n# attack-list = \"PATH\"   (not set)\n"));
    // Every key is valid TOML.
    let table: toml::Table = printed.parse().expect("valid TOML");
    assert!(table.contains_key("scan-ports"));
}

#[test]
fn the_config_file_sets_values_and_flags_override_it() {
    let path = config_file(
        "override.toml",
        "scan-ports = 20\nslow-horizon = 7200\nhome-net = [\"198.18.0.0/15\"]\nprobes = true\n",
    );
    let path = path.path();
    let out = run(&["--config", path, "--scan-ports", "12", "--print-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert_eq!(value_of(&printed, "scan-ports"), Some("12"));
    assert_eq!(value_of(&printed, "slow-horizon"), Some("7200"));
    assert_eq!(value_of(&printed, "home-net"), Some("[\"198.18.0.0/15\"]"));
    assert_eq!(value_of(&printed, "probes"), Some("true"));
    assert!(printed.starts_with(&format!(
        "# probe-detector configuration in effect: defaults, {path}, then the command line."
    )));
    // What --print-config prints is a config file that gives the same configuration.
    let again = config_file("again.toml", &printed);
    let out = run(&["--config", again.path(), "--print-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = |text: &str| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(body(&stdout(&out)), body(&printed));
}

#[test]
fn a_bad_config_is_one_line_naming_the_key_and_exit_status_2() {
    for (name, text, expected) in [
        (
            "unknown.toml",
            "scan-prots = 3\n",
            "key `scan-prots`: unknown key (did you mean `scan-ports`?)",
        ),
        (
            "range.toml",
            "scan-ports = 1\n",
            "key `scan-ports`: invalid value '1'",
        ),
        (
            "cidr.toml",
            "home-net = [\"198.18.0.1/15\"]\n",
            "key `home-net`: invalid value '198.18.0.1/15'",
        ),
        (
            "type.toml",
            "probes = 3\n",
            "key `probes`: expects true or false, not 3",
        ),
        (
            "syntax.toml",
            "scan-ports = = 3\n",
            "not valid TOML: line 1:",
        ),
    ] {
        let path = config_file(name, text);
        let out = run(&["--config", path.path(), "--print-config"]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(
            err.starts_with(&format!(
                "probe-detector: error: config file {}: {expected}",
                path.path()
            )),
            "{name}: {err}"
        );
        assert!(stdout(&out).is_empty());
    }
    let out = run(&["--config", "/nonexistent/probe-detector.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim_end(),
        "probe-detector: error: config file /nonexistent/probe-detector.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn help_teaches_the_config_file() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    assert!(help.contains("--config <FILE>"));
    assert!(help.contains("--print-config"));
    assert!(help.contains("probe-detector --print-config > /etc/probe-detector.toml"));
    assert!(help.contains("--crowd-sources"));
    assert!(help.contains("--slow-horizon"));
}

#[test]
fn replay_without_home_nets_or_of_a_non_capture_is_one_clear_line() {
    let out = run(&["replay", "/nonexistent.pcap"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("probe-detector: error: replay needs --home-net"),
        "{err}"
    );
    let not_pcap = config_file("not.pcap", "hello, this is not a capture at all");
    let out = run(&["replay", not_pcap.path(), "--home-net", "198.18.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "probe-detector: error: cannot replay {}: not a pcap file (magic number",
            not_pcap.path()
        )),
        "{err}"
    );
}

#[test]
fn version_names_the_commit_and_the_ebpf_object() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text.trim_end();
    let rest = line
        .strip_prefix(&format!(
            "probe-detector {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, object) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", eBPF object "))
        .unwrap_or_else(|| panic!("{line}"));
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let commit = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(hex(commit, 12) || commit == "unknown", "{line}");
    // The tests run a binary with its eBPF object built in.
    assert!(hex(object, 16), "{line}");
}

#[test]
fn the_man_page_and_completions_come_from_the_flags() {
    let man = run(&["--generate", "man"]);
    assert!(man.status.success(), "{}", stderr(&man));
    let page = stdout(&man);
    assert!(page.contains(".TH probe-detector 8"), "{page}");
    // Every flag of --help is in the page, documented.
    assert!(page.contains("\\-\\-scan\\-ports") && page.contains("\\-\\-syslog\\-facility"));
    for (kind, marker) in [
        ("complete-bash", "--scan-ports"),
        ("complete-zsh", "#compdef probe-detector"),
        ("complete-fish", "complete -c probe-detector"),
    ] {
        let out = run(&["--generate", kind]);
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        assert!(stdout(&out).contains(marker), "{kind}");
    }
    // Not a setting: --print-config leaves it out.
    assert!(!stdout(&run(&["--print-config"])).contains("generate"));
}

#[test]
fn a_bad_fleet_setting_is_one_clear_line_with_exit_status_2() {
    let cases: [(&[&str], &str); 4] = [
        (&["correlate"], "correlate needs --fleet URL"),
        (
            &["correlate", "--fleet", "http://198.18.30.1:6379"],
            "must begin with redis:// or rediss://",
        ),
        (
            &[
                "correlate",
                "--fleet",
                "redis://c1:secret-pw@198.18.30.1:6379",
                "--fleet-ca",
                "/nonexistent/ca.pem",
            ],
            "--fleet-ca needs a rediss:// URL",
        ),
        (
            &[
                "correlate",
                "--fleet",
                "redis://198.18.30.1:6379",
                "--sensor-name",
                "web:01",
            ],
            "cannot name a sensor in the fleet",
        ),
    ];
    for (args, needle) in cases {
        let out = run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            !err.contains("secret-pw"),
            "the password was printed: {err}"
        );
    }
}
