//! This host's DNS resolvers: the `nameserver` lines of /etc/resolv.conf and, behind
//! systemd-resolved's local stub, of the upstream list it writes.

use std::{fs, net::IpAddr};

/// Where resolvers are named: the system's file, and systemd-resolved's list of upstream
/// servers (when /etc/resolv.conf names only its stub, 127.0.0.53).
const FILES: [&str; 2] = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];

/// The resolvers of this host, sorted, loopback left out (it is never blocked anyway).
/// Unreadable files give none.
pub fn resolvers() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = FILES
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|text| nameservers(&text))
        .filter(|a| !a.is_loopback())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The addresses of the `nameserver` lines of a resolv.conf text (an IPv6 zone index, as
/// in `fe80::1%eth0`, is dropped).
fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let addr = words.next()?;
            addr.split('%').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_are_read_and_the_rest_ignored() {
        let text = "# generated\nsearch example.test\nnameserver 198.18.0.53\n\
                    nameserver   2001:db8::53\nnameserver fe80::1%eth0\n\
                    nameserver not-an-address\noptions edns0\n ; nameserver 198.18.9.9 x\n";
        let got = nameservers(text);
        let want: Vec<IpAddr> = ["198.18.0.53", "2001:db8::53", "fe80::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }
}
