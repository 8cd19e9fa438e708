//! Jackdaw's core: XML streams with limits, client connections, the router
//! and session registry, the hook bus modules register on, configuration,
//! and the storage and authentication traits that backends implement.

pub mod archive_query;
pub mod auth;
pub mod c2s;
pub mod component;
pub mod config;
pub mod hooks;
pub mod http_client;
pub mod http_request;
pub mod metrics;
pub mod roster;
pub mod sasl;
pub mod server;
pub mod session;
pub mod stanza;
pub mod storage;
pub mod stream;
pub mod tls;

pub use jid;
pub use minidom;
