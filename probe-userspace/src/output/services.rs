//! Well-known services: the name and risk of a probed port, as the seed's per-service
//! signatures report them ("TCP_Probe_Ftp: suspicious TCP connection to FTP port 21, low
//! risk"). Used to name probes in alerts and in the attack list.

use serde::Serialize;

/// How much a probe of this service says about the prober's intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Common services every scan touches (web, mail, DNS).
    Low,
    /// Remote access and file services often targeted by worms and brute force.
    Medium,
    /// Services whose exposure is itself a finding: databases, remote desktops, SMB,
    /// industrial and management protocols.
    High,
}

/// A well-known service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Short name (`FTP`, `SSH`, ...).
    pub name: &'static str,
    /// Risk of a probe of it.
    pub risk: Risk,
}

const fn svc(name: &'static str, risk: Risk) -> Service {
    Service { name, risk }
}

/// The table: (protocol, port) → service. TCP unless marked UDP.
const TABLE: &[(u8, u16, Service)] = &[
    (TCP, 21, svc("FTP", Risk::Low)),
    (TCP, 22, svc("SSH", Risk::Medium)),
    (TCP, 23, svc("Telnet", Risk::High)),
    (TCP, 25, svc("SMTP", Risk::Low)),
    (TCP, 53, svc("DNS", Risk::Low)),
    (UDP, 53, svc("DNS", Risk::Low)),
    (UDP, 69, svc("TFTP", Risk::Medium)),
    (TCP, 80, svc("HTTP", Risk::Low)),
    (TCP, 110, svc("POP3", Risk::Low)),
    (UDP, 123, svc("NTP", Risk::Low)),
    (TCP, 135, svc("MSRPC", Risk::High)),
    (TCP, 139, svc("NetBIOS", Risk::High)),
    (UDP, 137, svc("NetBIOS-NS", Risk::Medium)),
    (TCP, 143, svc("IMAP", Risk::Low)),
    (UDP, 161, svc("SNMP", Risk::High)),
    (TCP, 389, svc("LDAP", Risk::Medium)),
    (TCP, 443, svc("HTTPS", Risk::Low)),
    (TCP, 445, svc("SMB", Risk::High)),
    (TCP, 502, svc("Modbus", Risk::High)),
    (UDP, 500, svc("IKE", Risk::Medium)),
    (TCP, 587, svc("Submission", Risk::Low)),
    (TCP, 993, svc("IMAPS", Risk::Low)),
    (TCP, 995, svc("POP3S", Risk::Low)),
    (UDP, 1900, svc("SSDP", Risk::Medium)),
    (TCP, 1433, svc("MSSQL", Risk::High)),
    (TCP, 1521, svc("Oracle", Risk::High)),
    (TCP, 2049, svc("NFS", Risk::High)),
    (TCP, 2375, svc("Docker", Risk::High)),
    (TCP, 3306, svc("MySQL", Risk::High)),
    (TCP, 3389, svc("RDP", Risk::High)),
    (TCP, 5432, svc("PostgreSQL", Risk::High)),
    (TCP, 5900, svc("VNC", Risk::High)),
    (TCP, 6379, svc("Redis", Risk::High)),
    (TCP, 8080, svc("HTTP-alt", Risk::Low)),
    (TCP, 8443, svc("HTTPS-alt", Risk::Low)),
    (TCP, 9200, svc("Elasticsearch", Risk::High)),
    (TCP, 11211, svc("Memcached", Risk::High)),
    (UDP, 11211, svc("Memcached", Risk::High)),
    (TCP, 27017, svc("MongoDB", Risk::High)),
];

const TCP: u8 = probe_common::IPPROTO_TCP;
const UDP: u8 = probe_common::IPPROTO_UDP;

/// The well-known service at `port` for IP protocol `proto`, if there is one.
pub fn lookup(proto: u8, port: u16) -> Option<Service> {
    TABLE
        .iter()
        .find(|(p, n, _)| *p == proto && *n == port)
        .map(|(_, _, s)| *s)
}

/// The seed's signature name of a probe of `service` (`TCP_Probe_Ftp`, `UDP_Probe_Snmp`).
pub fn probe_signature(proto: u8, service: Service) -> String {
    let proto = if proto == UDP { "UDP" } else { "TCP" };
    let mut name = String::new();
    for (i, c) in service
        .name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .enumerate()
    {
        if i == 0 {
            name.push(c.to_ascii_uppercase());
        } else {
            name.push(c.to_ascii_lowercase());
        }
    }
    format!("{proto}_Probe_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ports_have_names_and_risks() {
        assert_eq!(lookup(TCP, 21), Some(svc("FTP", Risk::Low)));
        assert_eq!(lookup(TCP, 3389).map(|s| s.risk), Some(Risk::High));
        assert_eq!(lookup(UDP, 161).map(|s| s.name), Some("SNMP"));
        assert_eq!(lookup(UDP, 21), None, "FTP is TCP only");
        assert_eq!(lookup(TCP, 31337), None);
    }

    #[test]
    fn signatures_follow_the_seed() {
        assert_eq!(
            probe_signature(TCP, lookup(TCP, 21).unwrap()),
            "TCP_Probe_Ftp"
        );
        assert_eq!(
            probe_signature(UDP, lookup(UDP, 161).unwrap()),
            "UDP_Probe_Snmp"
        );
        assert_eq!(
            probe_signature(TCP, lookup(TCP, 8080).unwrap()),
            "TCP_Probe_Httpalt"
        );
    }

    #[test]
    fn the_table_has_no_duplicate_entries() {
        for (i, (p, n, _)) in TABLE.iter().enumerate() {
            assert!(
                !TABLE[i + 1..].iter().any(|(q, m, _)| q == p && m == n),
                "duplicate {p}/{n}"
            );
        }
    }
}
