//! Where a stream goes: a host (an address, or a name the exit resolves so
//! DNS never leaks from the client) and a port.

use core::fmt;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The longest domain name a destination may carry (RFC 1035, as SOCKS5).
pub const MAX_DOMAIN_BYTES: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Host {
    Ip(IpAddr),
    Domain(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dest {
    pub host: Host,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DestError {
    #[error("the port must not be 0")]
    PortZero,
    #[error("the host name is empty")]
    EmptyDomain,
    #[error("the host name is {0} bytes; the limit is {MAX_DOMAIN_BYTES}")]
    LongDomain(usize),
    #[error("the host name holds a character that is not allowed: {0:?}")]
    BadDomainChar(char),
    #[error("not host:port: {0:?}")]
    Syntax(String),
}

impl Dest {
    pub fn new(host: Host, port: u16) -> Dest {
        Dest { host, port }
    }

    /// Checks what the decoder cannot: a usable port and a sane name.
    pub fn validate(&self) -> Result<(), DestError> {
        if self.port == 0 {
            return Err(DestError::PortZero);
        }
        if let Host::Domain(name) = &self.host {
            if name.is_empty() {
                return Err(DestError::EmptyDomain);
            }
            if name.len() > MAX_DOMAIN_BYTES {
                return Err(DestError::LongDomain(name.len()));
            }
            if let Some(c) = name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
            {
                return Err(DestError::BadDomainChar(c));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Domain(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl core::str::FromStr for Dest {
    type Err = DestError;
    /// `host:port`, `1.2.3.4:port` or `[v6]:port`.
    fn from_str(s: &str) -> Result<Dest, DestError> {
        let syntax = || DestError::Syntax(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(syntax)?;
        let port: u16 = port.parse().map_err(|_| syntax())?;
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Host::Ip(IpAddr::V6(v6.parse().map_err(|_| syntax())?))
        } else if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            Host::Ip(IpAddr::V4(ip))
        } else {
            Host::Domain(host.to_string())
        };
        let dest = Dest { host, port };
        dest.validate()?;
        Ok(dest)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_kind_of_host() {
        for s in ["example.com:443", "10.1.2.3:80", "[::1]:8080"] {
            let d: Dest = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("a:0".parse::<Dest>(), Err(DestError::PortZero));
        assert!(matches!(
            "bad host:1".parse::<Dest>(),
            Err(DestError::BadDomainChar(' '))
        ));
        assert!(matches!(
            "nohost".parse::<Dest>(),
            Err(DestError::Syntax(_))
        ));
        assert!(matches!(":80".parse::<Dest>(), Err(DestError::EmptyDomain)));
    }
}
