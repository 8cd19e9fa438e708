//! Who is calling: the client's real address and whether its connection is
//! encrypted, believing X-Forwarded-For / X-Forwarded-Proto only from
//! `trusted_proxies` (Prosody's option), so logs and login rate limits
//! name the real client behind nginx.

use std::net::{IpAddr, SocketAddr};

use axum::extract::connect_info::Connected;
use axum::http::HeaderMap;
use axum::serve::IncomingStream;
use ipnet::IpNet;
use tokio::net::TcpListener;

use super::tls_listener::TlsListener;

/// The TCP peer of an HTTP connection and whether that listener is TLS.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            tls: false,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            tls: true,
        }
    }
}

/// The parsed `trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Entries were validated with the config; an unparsable one is skipped.
    pub fn new(entries: &[String]) -> Self {
        Self(
            entries
                .iter()
                .filter_map(|e| {
                    e.parse::<IpNet>()
                        .ok()
                        .or_else(|| e.parse::<IpAddr>().ok().map(IpNet::from))
                })
                .collect(),
        )
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// The client as far as the server can tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Caller {
    pub addr: SocketAddr,
    /// Encrypted end to end to us: a TLS listener, or a trusted proxy that
    /// says the client reached it over https.
    pub secure: bool,
}

impl Caller {
    pub fn new(peer: Peer, headers: &HeaderMap, proxies: &TrustedProxies) -> Self {
        if !proxies.trusts(peer.addr.ip()) {
            return Caller {
                addr: peer.addr,
                secure: peer.tls,
            };
        }
        // The nearest hop not ours is the client: walk the chain from the
        // right, skipping trusted proxies (a client can prepend anything).
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect();
        let ip = forwarded
            .iter()
            .rev()
            .find(|ip| !proxies.trusts(**ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer.addr.ip());
        let proto_https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        Caller {
            addr: SocketAddr::new(ip, peer.addr.port()),
            secure: peer.tls || proto_https,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str) -> Peer {
        Peer {
            addr: addr.parse().unwrap(),
            tls: false,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(&["127.0.0.1".into(), "10.0.0.0/8".into()]);
        let h = headers(&[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")]);
        let via_proxy = Caller::new(peer("127.0.0.1:4000"), &h, &proxies);
        assert_eq!(via_proxy.addr, "203.0.113.9:4000".parse().unwrap());
        assert!(via_proxy.secure);
        let direct = Caller::new(peer("198.51.100.7:4000"), &h, &proxies);
        assert_eq!(direct.addr, "198.51.100.7:4000".parse().unwrap());
        assert!(!direct.secure);
    }

    #[test]
    fn client_cannot_spoof_by_prepending_addresses() {
        let proxies = TrustedProxies::new(&["127.0.0.1".into(), "10.0.0.0/8".into()]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.1.2.3")]);
        let c = Caller::new(peer("127.0.0.1:1"), &h, &proxies);
        assert_eq!(c.addr.ip(), "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_entries() {
        let proxies = TrustedProxies::new(&["127.0.0.1".into()]);
        assert!(proxies.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!proxies.trusts("::1".parse().unwrap()));
    }
}
