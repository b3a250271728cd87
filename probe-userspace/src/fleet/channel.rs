//! The connection to the fleet's Redis: one server or a Redis Cluster (found by asking the
//! server), plain (`redis://`) or TLS (`rediss://`, with `--fleet-ca` for a private CA);
//! and the URL as the log shows it, password hidden.

use std::{path::PathBuf, time::Duration};

use redis::{
    Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, TlsCertificates,
    Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster_async::ClusterConnection,
};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer may take: longer than any blocking read we make.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the fleet's Redis is: `--fleet URL` and `--fleet-ca`.
#[derive(Clone, Debug)]
pub struct FleetTarget {
    /// The URL as given.
    pub url: String,
    /// A PEM file of the CA that signed the server's certificate (`rediss://`).
    pub ca: Option<PathBuf>,
}

/// A `--fleet` value that is not a Redis URL.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a URL redis understands.
    #[error(
        "--fleet {url}: not a Redis URL ({reason}); e.g. redis://HOST:6379 or rediss://USER:PASSWORD@HOST:6379"
    )]
    Url { url: String, reason: String },
    /// The CA file cannot be read.
    #[error("--fleet-ca {path}: {source}")]
    Ca {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `--fleet-ca` without `rediss://`.
    #[error("--fleet-ca needs a rediss:// URL (TLS); --fleet {0} is plain")]
    CaWithoutTls(String),
}

impl FleetTarget {
    /// Checks a `--fleet` value (nothing is connected).
    pub fn parse(url: &str, ca: Option<PathBuf>) -> Result<Self, TargetError> {
        let bad = |reason: String| TargetError::Url {
            url: redact(url),
            reason,
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(bad("it must begin with redis:// or rediss://".into()));
        }
        url.into_connection_info()
            .map_err(|err| bad(err.to_string()))?;
        if ca.is_some() && !url.starts_with("rediss://") {
            return Err(TargetError::CaWithoutTls(redact(url)));
        }
        Ok(Self {
            url: url.to_owned(),
            ca,
        })
    }

    /// The URL with its password hidden, for the log.
    pub fn shown(&self) -> String {
        redact(&self.url)
    }

    fn info(&self) -> RedisResult<ConnectionInfo> {
        self.url.as_str().into_connection_info()
    }

    fn certificates(&self) -> Result<Option<TlsCertificates>, TargetError> {
        let Some(path) = &self.ca else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|source| TargetError::Ca {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    /// Connects: to the server, or to the cluster it is a node of.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        install_crypto();
        let certs = self.certificates()?;
        let client = match &certs {
            Some(certs) => redis::Client::build_with_tls(self.info()?, certs.clone())?,
            None => redis::Client::open(self.info()?)?,
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut single = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut single)
            .await?;
        if !info.contains("cluster_enabled:1") {
            return Ok(Conn::Single(single));
        }
        let mut builder = redis::cluster::ClusterClient::builder(vec![self.info()?])
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT);
        if let Some(certs) = certs {
            builder = builder.certs(certs);
        }
        let cluster = builder.build()?.get_async_connection().await?;
        Ok(Conn::Cluster(Box::new(cluster)))
    }
}

/// rustls needs one process-wide crypto provider; ring is the one built in.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A URL with the password (between `:` and `@` of the authority) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// A connection to one server or to a cluster.
pub enum Conn {
    /// One server.
    Single(MultiplexedConnection),
    /// A Redis Cluster: each command goes to the node of its keys' slot.
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    /// True when connected to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Waits before the next connection attempt: 100 ms, doubling to 5 s.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait after one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let wait = Duration::from_millis(100) * 2u32.pow(self.failures.min(6));
        self.failures += 1;
        wait.min(Duration::from_secs(5))
    }

    /// A connection worked.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_the_log() {
        assert_eq!(
            redact("rediss://sensor:s3cret@198.18.30.1:6380/0"),
            "rediss://sensor:***@198.18.30.1:6380/0"
        );
        assert_eq!(
            redact("redis://198.18.30.1:6379"),
            "redis://198.18.30.1:6379"
        );
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        let err = FleetTarget::parse("http://h:1", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis://"), "{err}");
        let err = FleetTarget::parse("redis://u:pw@h:1", Some("ca.pem".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rediss://") && !err.contains("pw"), "{err}");
        assert!(FleetTarget::parse("rediss://h:6380", Some("ca.pem".into())).is_ok());
    }

    #[test]
    fn backoff_grows_to_five_seconds() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..8)
            .map(|_| backoff.next_wait().as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(100));
    }
}
