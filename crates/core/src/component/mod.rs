//! Components: services that own a whole domain (`rooms.example.com`,
//! `bot.example.com`). Internal ones (MUC, component_http) and external
//! XEP-0114 connections both implement `Component`; the router hands them
//! every stanza addressed to their domain.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use minidom::Element;

use crate::server::Server;

pub mod external;

#[async_trait]
pub trait Component: Send + Sync {
    /// Takes a stanza addressed to the component's domain; `from` is
    /// trustworthy. Must not block the caller for long: queue the work.
    async fn deliver(&self, server: &Server, stanza: Element);

    /// The server is stopping: say goodbye while streams are still open.
    async fn shutdown(&self, _server: &Server) {}
}

/// Which domains are components, and which of them are connected now.
#[derive(Default)]
pub struct ComponentRegistry {
    /// Every configured component domain (connected or not).
    configured: RwLock<HashMap<String, Option<Arc<dyn Component>>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("{0} is not a configured component")]
    Unknown(String),
    #[error("{0} is already connected")]
    AlreadyConnected(String),
}

impl ComponentRegistry {
    /// Declares a component domain, connected or not yet.
    pub fn configure(&self, domain: &str, component: Option<Arc<dyn Component>>) {
        let mut map = self.configured.write().unwrap_or_else(|p| p.into_inner());
        map.insert(domain.to_string(), component);
    }

    /// Attaches an external component; a second connection for the same
    /// domain is refused (the first keeps working).
    pub fn connect(&self, domain: &str, component: Arc<dyn Component>) -> Result<(), ComponentError> {
        let mut map = self.configured.write().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(domain) {
            None => Err(ComponentError::Unknown(domain.to_string())),
            Some(Some(_)) => Err(ComponentError::AlreadyConnected(domain.to_string())),
            Some(slot) => {
                *slot = Some(component);
                Ok(())
            }
        }
    }

    pub fn disconnect(&self, domain: &str) {
        let mut map = self.configured.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = map.get_mut(domain) {
            *slot = None;
        }
    }

    pub fn is_component(&self, domain: &str) -> bool {
        let map = self.configured.read().unwrap_or_else(|p| p.into_inner());
        map.contains_key(domain)
    }

    /// The component serving `domain`: Some(None) when it is configured
    /// but not connected.
    pub fn get(&self, domain: &str) -> Option<Option<Arc<dyn Component>>> {
        let map = self.configured.read().unwrap_or_else(|p| p.into_inner());
        map.get(domain).cloned()
    }

    /// The components serving their domain right now.
    pub fn connected(&self) -> Vec<Arc<dyn Component>> {
        let map = self.configured.read().unwrap_or_else(|p| p.into_inner());
        map.values().flatten().cloned().collect()
    }

    pub fn domains(&self) -> Vec<String> {
        let map = self.configured.read().unwrap_or_else(|p| p.into_inner());
        let mut d: Vec<String> = map.keys().cloned().collect();
        d.sort();
        d
    }
}

/// Renames the namespace of a stanza and of every descendant in the same
/// namespace (`jabber:client` inside, `jabber:component:accept` on the
/// wire), which minidom has no setter for.
pub fn renamespace(el: &Element, from: &str, to: &str) -> Element {
    let ns = if el.ns() == from { to.to_string() } else { el.ns() };
    let mut out = Element::bare(el.name(), ns);
    *out.attrs_mut() = el.attrs().clone();
    for node in el.nodes() {
        match node {
            minidom::Node::Element(child) => {
                out.append_child(renamespace(child, from, to));
            }
            minidom::Node::Text(t) => out.append_text(t.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamespace_keeps_foreign_namespaces() {
        let xml =
            "<message xmlns='jabber:client' to='a@b'><body>hi</body><x xmlns='urn:x'><y/></x></message>";
        let el: Element = xml.parse().unwrap();
        let out = renamespace(&el, "jabber:client", "jabber:component:accept");
        assert_eq!(out.ns(), "jabber:component:accept");
        assert_eq!(out.attr("to"), Some("a@b"));
        assert_eq!(
            out.get_child("body", "jabber:component:accept").unwrap().text(),
            "hi"
        );
        assert!(out.get_child("x", "urn:x").unwrap().has_child("y", "urn:x"));
    }
}
