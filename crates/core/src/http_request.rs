//! What the HTTP layer tells module routes about a request, beyond axum's
//! extractors: the client as seen through `trusted_proxies`.

use std::net::SocketAddr;

/// Inserted into every request's extensions by the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTransport {
    /// The client's real address (after trusted proxies).
    pub addr: SocketAddr,
    /// Encrypted from the client to us (TLS listener, or a trusted proxy
    /// that says the client used https).
    pub secure: bool,
}
