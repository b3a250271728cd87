//! Debian packages the tests need, checked with dpkg-query and installed with apt-get.

use anyhow::bail;

use crate::cmd;

/// A package the tests need, and why.
pub struct Package {
    /// Debian package name.
    pub name: &'static str,
    /// What uses it.
    pub why: &'static str,
}

/// Packages `cargo xtask test` needs.
pub const TEST_PACKAGES: &[Package] = &[
    Package {
        name: "nmap",
        why: "the lab test's scanner",
    },
    Package {
        name: "curl",
        why: "the lab test's benign HTTP client",
    },
    Package {
        name: "iproute2",
        why: "network namespaces and veth pairs for the lab test",
    },
    Package {
        name: "rsyslog",
        why: "a real syslog daemon takes the syslog outputs in a lab test",
    },
    Package {
        name: "logrotate",
        why: "rotates the file output in a lab test",
    },
    Package {
        name: "traceroute",
        why: "a lab test checks that traceroute raises no alert",
    },
    Package {
        name: "mtr-tiny",
        why: "a lab test checks that mtr raises no alert",
    },
    Package {
        name: "iputils-tracepath",
        why: "a lab test checks that tracepath raises no alert",
    },
    Package {
        name: "redis-server",
        why: "the fleet's lab test runs Redis (redis-server, redis-cli) for sensors and correlators",
    },
    Package {
        name: "openssl",
        why: "the fleet's lab test makes TLS certificates for Redis",
    },
    Package {
        name: "prometheus",
        why: "promtool checks the metrics; the server scrapes probe-detector in a lab test",
    },
];

/// Packages `cargo xtask lab` needs, beyond the test packages.
pub const LAB_PACKAGES: &[Package] = &[
    Package {
        name: "masscan",
        why: "a lab scanner",
    },
    Package {
        name: "hping3",
        why: "a lab scanner and cost load",
    },
    Package {
        name: "zmap",
        why: "a lab scanner",
    },
    Package {
        name: "netsniff-ng",
        why: "trafgen, the fastest cost load",
    },
    Package {
        name: "tcpdump",
        why: "records each scenario to count its probes",
    },
    Package {
        name: "scanlogd",
        why: "a peer detector",
    },
    Package {
        name: "psad",
        why: "a peer detector",
    },
    Package {
        name: "portsentry",
        why: "a peer detector",
    },
    Package {
        name: "iptables",
        why: "the LOG rules psad reads",
    },
    Package {
        name: "bpftool",
        why: "probe-detector's BPF run time for the cost table",
    },
    Package {
        name: "scamper",
        why: "Paris traceroute, benign traffic",
    },
];

/// True when dpkg reports the package installed.
pub fn installed(name: &str) -> bool {
    cmd::output(&mut cmd::command(
        "dpkg-query",
        ["-W", "-f=${Status}", name],
    ))
    .is_some_and(|status| status.trim() == "install ok installed")
}

/// The packages of `wanted` that are not installed.
pub fn missing(wanted: &[Package]) -> Vec<&'static str> {
    wanted
        .iter()
        .filter(|p| !installed(p.name))
        .map(|p| p.name)
        .collect()
}

/// Installs packages with apt-get (refreshing the package lists first). Needs root.
pub fn install(names: &[&str]) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    if cmd::output(&mut cmd::command("apt-get", ["--version"])).is_none() {
        bail!(
            "apt-get is not available; install these packages by hand: {}",
            names.join(" ")
        );
    }
    if !cmd::is_root() {
        bail!(
            "installing Debian packages needs root: run `sudo apt-get install {}` or run this as root",
            names.join(" ")
        );
    }
    let apt = |args: &[&str]| {
        let mut c = cmd::command("apt-get", args);
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    cmd::run(&mut apt(&["-q", "update"]))?;
    let mut args = vec!["-q", "-y", "--no-install-recommends", "install"];
    args.extend_from_slice(names);
    cmd::run(&mut apt(&args))
}
