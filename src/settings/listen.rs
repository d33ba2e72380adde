//! Listening addresses as 1.x writes them, shared by `[udp]`, `[tcp]`
//! and `[http]`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use serde::Deserialize;

/// A listening address as 1.x writes it: `:8080` (every interface) or
/// `host:port`, resolved when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// The address to bind.
    pub addr: SocketAddr,
    /// As written, for messages.
    text: String,
}

impl ListenAddr {
    /// Every interface, on `port`.
    pub fn any(port: u16) -> ListenAddr {
        ListenAddr {
            addr: SocketAddr::from(([0, 0, 0, 0], port)),
            text: format!(":{port}"),
        }
    }

    /// Reads `:port` or `host:port`.
    pub fn parse(text: &str) -> Result<ListenAddr, BadListenAddr> {
        let full = if text.starts_with(':') {
            format!("0.0.0.0{text}")
        } else {
            text.to_string()
        };
        let addr = full
            .to_socket_addrs()
            .map_err(|e| BadListenAddr::Invalid(text.to_string(), e))?
            .next()
            .ok_or_else(|| BadListenAddr::Nowhere(text.to_string()))?;
        Ok(ListenAddr {
            addr,
            text: text.to_string(),
        })
    }
}

/// Why a listening address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BadListenAddr {
    /// Not `:port` or `host:port`, or the host does not resolve.
    #[error("'{0}' is not a valid address: {1}")]
    Invalid(String, #[source] std::io::Error),
    /// A host with no address.
    #[error("'{0}' resolves to no address")]
    Nowhere(String),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ListenAddr, D::Error> {
        ListenAddr::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
