//! `cargo xtask package`: a Debian package of probe-detector (the binary, the systemd
//! unit, a default configuration from `--print-config`, the man page and bash, zsh and
//! fish completions generated from the command line's own definitions, the docs), built
//! with dpkg-deb, its Depends computed by dpkg-shlibdeps, checked by lintian (no errors
//! allowed) and by unpacking it into a scratch root (`dpkg-deb -x`: no maintainer script
//! runs on this machine) and running the unpacked binary.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{build, cmd, packages, setup, target_dir, toolchain::Pin};

/// Debian packages the packaging needs.
pub const PACKAGE_PACKAGES: &[packages::Package] = &[
    packages::Package {
        name: "dpkg-dev",
        why: "dpkg-shlibdeps computes the package's Depends",
    },
    packages::Package {
        name: "lintian",
        why: "checks the package",
    },
    packages::Package {
        name: "binutils",
        why: "strip, for the packaged binary",
    },
];

const NAME: &str = "probe-detector";
const MAINTAINER: &str = "probe-detector developers <probe-detector@lists.example.org>";

/// Builds, checks and leaves `target/package/probe-detector_VERSION_ARCH.deb`.
pub fn run(workspace: &Path, pin: &Pin) -> anyhow::Result<PathBuf> {
    let rustc = setup(pin, false)?;
    let missing = packages::missing(PACKAGE_PACKAGES);
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        packages::install(&missing)?;
    }
    build(workspace, pin, true)?;
    let binary = target_dir(workspace).join("release").join(NAME);
    let version = env!("CARGO_PKG_VERSION");
    let arch = debian_arch(&rustc.host)?;
    let out = target_dir(workspace).join("package");
    let root = out.join(format!("{NAME}_{version}_{arch}"));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;

    // The files.
    let sbin = root.join("usr/sbin");
    fs::create_dir_all(&sbin)?;
    let installed = sbin.join(NAME);
    cmd::run(
        Command::new("strip")
            .args(["--strip-unneeded", "-o"])
            .arg(&installed)
            .arg(&binary),
    )?;
    let unit = fs::read_to_string(workspace.join("packaging/probe-detector.service"))?
        .replace("/usr/local/bin/probe-detector", "/usr/sbin/probe-detector");
    write(
        &root.join("usr/lib/systemd/system/probe-detector.service"),
        unit.as_bytes(),
        0o644,
    )?;
    let rotate = fs::read(workspace.join("packaging/probe-detector.logrotate"))?;
    write(&root.join("etc/logrotate.d/probe-detector"), &rotate, 0o644)?;
    let config = output(Command::new(&installed).arg("--print-config"))?;
    write(
        &root.join("etc/probe-detector/probe-detector.toml"),
        &config,
        0o644,
    )?;
    let man = output(Command::new(&installed).args(["--generate", "man"]))?;
    write_gz(&root.join("usr/share/man/man8/probe-detector.8.gz"), &man)?;
    for (kind, path) in [
        (
            "complete-bash",
            "usr/share/bash-completion/completions/probe-detector",
        ),
        (
            "complete-zsh",
            "usr/share/zsh/vendor-completions/_probe-detector",
        ),
        (
            "complete-fish",
            "usr/share/fish/vendor_completions.d/probe-detector.fish",
        ),
    ] {
        let text = output(Command::new(&installed).args(["--generate", kind]))?;
        write(&root.join(path), &text, 0o644)?;
    }
    let doc = root.join("usr/share/doc").join(NAME);
    write(&doc.join("copyright"), copyright().as_bytes(), 0o644)?;
    write_gz(&doc.join("changelog.gz"), changelog(version).as_bytes())?;
    for file in [
        "README.md",
        "docs/alerts.md",
        "docs/metrics.md",
        "docs/fleet.md",
        "docs/design.md",
    ] {
        let text = fs::read(workspace.join(file))?;
        let name = Path::new(file)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        write_gz(&doc.join(format!("{name}.gz")), &text)?;
    }

    // The control files.
    let depends = shlib_depends(&out, &installed)?;
    let installed_kib = du_kib(&root)?;
    let control = format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://github.com/probe-detector/probe-detector\n\
         Description: kernel-accelerated detector of port probes and port scans\n \
         probe-detector attaches an XDP program and a TC egress program to a network\n \
         interface, counts failed connection attempts per source and port in BPF maps,\n \
         and recognises vertical port scans, host sweeps, distributed (decoy) scans and\n \
         slow scans, over IPv4 and IPv6. Alerts are Suricata EVE JSON records written to\n \
         stdout, a file or syslog; it can drop the packets of confirmed scanners in XDP.\n"
    );
    let debian = root.join("DEBIAN");
    write(&debian.join("control"), control.as_bytes(), 0o644)?;
    write(
        &debian.join("conffiles"),
        b"/etc/logrotate.d/probe-detector\n/etc/probe-detector/probe-detector.toml\n",
        0o644,
    )?;
    let sums = output(
        Command::new("sh")
            .current_dir(&root)
            .args(["-c", "find usr -type f -print0 | sort -z | xargs -0 md5sum"]),
    )?;
    write(&debian.join("md5sums"), &sums, 0o644)?;

    let deb = out.join(format!("{NAME}_{version}_{arch}.deb"));
    cmd::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&deb),
    )?;
    check(&deb, &out, version)?;
    eprintln!(
        "xtask: {} (lintian: no errors; unpacked binary runs)",
        deb.display()
    );
    Ok(deb)
}

/// lintian, then the unpacked binary's `--version` and `--print-config`.
fn check(deb: &Path, out: &Path, version: &str) -> anyhow::Result<()> {
    cmd::run(
        Command::new("lintian")
            .args(["--fail-on", "error", "--display-info", "--allow-root"])
            .arg(deb),
    )
    .context("lintian found errors in the package")?;
    let scratch = out.join("scratch-root");
    let _ = fs::remove_dir_all(&scratch);
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&scratch))?;
    let binary = scratch.join("usr/sbin").join(NAME);
    let said = String::from_utf8(output(Command::new(&binary).arg("--version"))?)?;
    if !said.starts_with(&format!("{NAME} {version} (commit ")) {
        bail!("the unpacked binary says {said:?}");
    }
    let config = String::from_utf8(output(Command::new(&binary).arg("--print-config"))?)?;
    let packaged = fs::read_to_string(scratch.join("etc/probe-detector/probe-detector.toml"))?;
    if !config.contains("scan-ports = 10") || config != packaged {
        bail!("the unpacked binary's --print-config differs from the packaged configuration");
    }
    for page in [
        "usr/share/man/man8/probe-detector.8.gz",
        "usr/share/doc/probe-detector/copyright",
    ] {
        if !scratch.join(page).exists() {
            bail!("{page} is missing from the package");
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(())
}

/// The Debian architecture of a Rust target triple.
fn debian_arch(triple: &str) -> anyhow::Result<&'static str> {
    Ok(match triple.split('-').next().unwrap_or_default() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "riscv64gc" => "riscv64",
        "powerpc64le" => "ppc64el",
        "s390x" => "s390x",
        other => bail!("no Debian architecture for {other} ({triple})"),
    })
}

/// The Depends dpkg-shlibdeps computes for `binary` (it wants a debian/control beside it).
fn shlib_depends(out: &Path, binary: &Path) -> anyhow::Result<String> {
    let dir = out.join("shlibdeps");
    write(
        &dir.join("debian/control"),
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let said = String::from_utf8(output(
        Command::new("dpkg-shlibdeps")
            .current_dir(&dir)
            .arg("-O")
            .arg(binary),
    )?)?;
    let depends = said
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps gave no shlibs:Depends")?
        .trim()
        .to_owned();
    let _ = fs::remove_dir_all(&dir);
    Ok(depends)
}

/// The size of a tree in KiB, as Installed-Size counts it.
fn du_kib(root: &Path) -> anyhow::Result<u64> {
    let said = String::from_utf8(output(
        Command::new("du")
            .args(["-sk", "--apparent-size"])
            .arg(root),
    )?)?;
    said.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du gave no size")
}

/// A command's stdout; an error with its stderr unless it succeeds.
fn output(command: &mut Command) -> anyhow::Result<Vec<u8>> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Writes a file (and its directories) with `mode`.
fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes `bytes` gzip-compressed (`gzip -9n`, as Debian wants: no name, no time stamp).
fn write_gz(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut gzip = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    gzip.stdin
        .take()
        .context("gzip has no stdin")?
        .write_all(bytes)?;
    let out = gzip.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed for {}", path.display());
    }
    write(path, &out.stdout, 0o644)
}

/// The machine-readable copyright file.
fn copyright() -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: {NAME}\n\
         \n\
         Files: *\n\
         Copyright: 2026 probe-detector developers\n\
         License: MIT or Apache-2.0\n\
         \n\
         License: MIT\n \
         Permission is hereby granted, free of charge, to any person obtaining a copy\n \
         of this software and associated documentation files (the \"Software\"), to deal\n \
         in the Software without restriction, including without limitation the rights\n \
         to use, copy, modify, merge, publish, distribute, sublicense, and/or sell\n \
         copies of the Software, and to permit persons to whom the Software is\n \
         furnished to do so, subject to the following conditions:\n \
         .\n \
         The above copyright notice and this permission notice shall be included in all\n \
         copies or substantial portions of the Software.\n \
         .\n \
         THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR\n \
         IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,\n \
         FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE\n \
         AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER\n \
         LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,\n \
         OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE\n \
         SOFTWARE.\n\
         \n\
         License: Apache-2.0\n \
         On Debian systems, the full text of the Apache License, Version 2.0, is in\n \
         /usr/share/common-licenses/Apache-2.0.\n"
    )
}

/// A Debian changelog with one entry for this version.
fn changelog(version: &str) -> String {
    format!(
        "{NAME} ({version}) unstable; urgency=medium\n\
         \n  \
         * Built by cargo xtask package.\n\
         \n \
         -- {MAINTAINER}  Sat, 28 Nov 2026 00:00:00 +0000\n"
    )
}
