//! Incremental XML stream parser with limits.
//!
//! rxml does the byte-level work and already refuses what XMPP forbids
//! (DTDs and thus entity declarations, processing instructions, comments),
//! which is what defeats "billion laughs" documents. On top of it this turns
//! events into a stream header and one `minidom::Element` per top-level child,
//! and enforces the limits an attacker would otherwise use: bytes per
//! stanza, nesting depth and attributes per element.

use minidom::Element;
use rxml::error::EndOrError;
use rxml::{Event, Parse, Parser};

use super::StreamError;
use super::ns;

/// Bounds applied while parsing; `max_stanza_bytes` can change once the
/// stream is authenticated (a smaller limit applies before).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attributes: 64,
        }
    }
}

/// The attributes of `<stream:stream>`.
#[derive(Debug, Clone, Default)]
pub struct StreamHeader {
    /// Namespace of the root element; must be `http://etherx.jabber.org/streams`.
    pub stream_ns: String,
    pub local_name: String,
    pub to: Option<String>,
    pub from: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
    pub id: Option<String>,
    /// The default namespace the header declares (`jabber:client` for
    /// clients); rxml resolves namespaces, so this is read separately.
    pub default_ns: Option<String>,
}

/// The most bytes a stream header (with the XML declaration) may take.
const MAX_HEADER_BYTES: usize = 8 * 1024;

#[derive(Debug)]
pub enum StreamEvent {
    Header(StreamHeader),
    Stanza(Element),
    /// `</stream:stream>`.
    End,
}

pub struct StreamParser {
    parser: Parser,
    /// Elements under construction; index 0 is the stanza (depth 1).
    stack: Vec<Element>,
    in_stream: bool,
    stanza_bytes: usize,
    limits: Limits,
    /// Raw bytes seen before the stream header was complete, to read its
    /// default namespace declaration.
    header_bytes: Vec<u8>,
}

impl StreamParser {
    pub fn new(limits: Limits) -> Self {
        Self {
            parser: Parser::new(),
            stack: Vec::new(),
            in_stream: false,
            stanza_bytes: 0,
            limits,
            header_bytes: Vec::new(),
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Feeds bytes read from the peer, appending complete events to `out`.
    /// All of `data` is consumed unless an error is returned.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        if !self.in_stream {
            // A header longer than this is cut, and then found to lack its
            // namespace declaration.
            let room = MAX_HEADER_BYTES.saturating_sub(self.header_bytes.len());
            self.header_bytes.extend_from_slice(&data[..data.len().min(room)]);
        }
        loop {
            match self.parser.parse(&mut data, false) {
                Ok(Some(ev)) => self.handle(ev, out)?,
                Ok(None) => return Ok(()),
                Err(EndOrError::NeedMoreData) => {
                    // Bytes still buffered inside rxml belong to the current
                    // stanza; counting them stops a peer from streaming one
                    // endless attribute or text node.
                    return Ok(());
                }
                Err(EndOrError::Error(e)) => {
                    return Err(match e {
                        rxml::Error::RestrictedXml(what) => StreamError::RestrictedXml(what.to_string()),
                        other => StreamError::NotWellFormed(other.to_string()),
                    });
                }
            }
        }
    }

    fn count(&mut self, len: usize) -> Result<(), StreamError> {
        if self.stack.is_empty() {
            return Ok(());
        }
        self.stanza_bytes += len;
        if self.stanza_bytes > self.limits.max_stanza_bytes {
            return Err(StreamError::PolicyViolation(format!(
                "stanza larger than {} bytes",
                self.limits.max_stanza_bytes
            )));
        }
        Ok(())
    }

    fn handle(&mut self, ev: Event, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        match ev {
            Event::XmlDeclaration(..) => Ok(()),
            Event::StartElement(metrics, (ns, name), attrs) => {
                if !self.in_stream {
                    self.in_stream = true;
                    if attrs.len() > self.limits.max_attributes {
                        return Err(StreamError::PolicyViolation("too many attributes".into()));
                    }
                    let mut header = header_from(ns.as_str(), name.as_str(), &attrs);
                    header.default_ns = default_namespace(&std::mem::take(&mut self.header_bytes));
                    out.push(StreamEvent::Header(header));
                    return Ok(());
                }
                if self.stack.is_empty() {
                    self.stanza_bytes = 0;
                }
                if self.stack.len() >= self.limits.max_depth {
                    return Err(StreamError::PolicyViolation("elements nested too deeply".into()));
                }
                if attrs.len() > self.limits.max_attributes {
                    return Err(StreamError::PolicyViolation("too many attributes".into()));
                }
                let mut el = Element::bare(name.as_str(), ns.as_str());
                *el.attrs_mut() = attrs;
                self.stack.push(el);
                self.count(metrics.len())
            }
            Event::Text(metrics, text) => {
                self.count(metrics.len())?;
                if let Some(top) = self.stack.last_mut() {
                    top.append_text(text);
                }
                // Whitespace between stanzas (keepalives) is ignored.
                Ok(())
            }
            Event::EndElement(metrics) => {
                self.count(metrics.len())?;
                match self.stack.pop() {
                    Some(el) => {
                        match self.stack.last_mut() {
                            Some(parent) => {
                                parent.append_child(el);
                            }
                            None => out.push(StreamEvent::Stanza(el)),
                        }
                        Ok(())
                    }
                    None => {
                        self.in_stream = false;
                        out.push(StreamEvent::End);
                        Ok(())
                    }
                }
            }
        }
    }
}

/// Reads the default namespace declared on the first element of `raw`
/// with rxml's raw (non-namespace-resolving) parser.
fn default_namespace(mut raw: &[u8]) -> Option<String> {
    let mut parser = rxml::RawParser::new();
    loop {
        match parser.parse(&mut raw, false) {
            Ok(Some(rxml::RawEvent::Attribute(_, (None, name), value))) if name.as_str() == "xmlns" => {
                return Some(value.to_string());
            }
            Ok(Some(rxml::RawEvent::ElementHeadClose(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(_)) => {}
        }
    }
}

fn header_from(ns: &str, name: &str, attrs: &rxml::AttrMap) -> StreamHeader {
    let mut header = StreamHeader {
        stream_ns: ns.to_string(),
        local_name: name.to_string(),
        ..Default::default()
    };
    for ((attr_ns, attr_name), value) in attrs.iter() {
        match (attr_ns.as_str(), attr_name.as_str()) {
            ("", "to") => header.to = Some(value.clone()),
            ("", "from") => header.from = Some(value.clone()),
            ("", "version") => header.version = Some(value.clone()),
            ("", "id") => header.id = Some(value.clone()),
            (ns::XML, "lang") => header.lang = Some(value.clone()),
            _ => {}
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    fn parse_all(input: &[u8], limits: Limits) -> Result<Vec<StreamEvent>, StreamError> {
        let mut p = StreamParser::new(limits);
        let mut out = Vec::new();
        p.feed(input, &mut out)?;
        Ok(out)
    }

    #[test]
    fn header_and_stanza_byte_by_byte() {
        let doc = format!("{HEADER}<message to='a@b'><body>hi &amp; bye</body></message></stream:stream>");
        let mut p = StreamParser::new(Limits::default());
        let mut out = Vec::new();
        for b in doc.as_bytes() {
            p.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out.len(), 3);
        match &out[0] {
            StreamEvent::Header(h) => {
                assert_eq!(h.stream_ns, ns::STREAM);
                assert_eq!(h.default_ns.as_deref(), Some("jabber:client"));
                assert_eq!(h.to.as_deref(), Some("localhost"));
                assert_eq!(h.version.as_deref(), Some("1.0"));
            }
            other => panic!("expected header, got {other:?}"),
        }
        match &out[1] {
            StreamEvent::Stanza(el) => {
                assert_eq!(el.name(), "message");
                assert_eq!(el.ns(), "jabber:client");
                assert_eq!(el.get_child("body", "jabber:client").unwrap().text(), "hi & bye");
            }
            other => panic!("expected stanza, got {other:?}"),
        }
        assert!(matches!(out[2], StreamEvent::End));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let doc = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>\
            <!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]><stream:stream>&lol2;";
        assert!(matches!(
            parse_all(doc.as_bytes(), Limits::default()),
            Err(StreamError::RestrictedXml(_) | StreamError::NotWellFormed(_))
        ));
    }

    #[test]
    fn malformed_xml_is_not_well_formed() {
        let doc = format!("{HEADER}<message><body></message>");
        assert!(matches!(
            parse_all(doc.as_bytes(), Limits::default()),
            Err(StreamError::NotWellFormed(_))
        ));
    }

    #[test]
    fn oversized_stanza_is_a_policy_violation() {
        let limits = Limits {
            max_stanza_bytes: 1000,
            ..Limits::default()
        };
        let doc = format!("{HEADER}<message><body>{}</body></message>", "x".repeat(2000));
        assert!(matches!(
            parse_all(doc.as_bytes(), limits),
            Err(StreamError::PolicyViolation(_))
        ));
        // The limit is per stanza, not per stream.
        let ok = format!("{HEADER}{}", "<message><body>x</body></message>".repeat(100));
        assert!(parse_all(ok.as_bytes(), limits).is_ok());
    }

    #[test]
    fn deep_nesting_is_a_policy_violation() {
        let doc = format!("{HEADER}{}", "<a>".repeat(100));
        assert!(matches!(
            parse_all(doc.as_bytes(), Limits::default()),
            Err(StreamError::PolicyViolation(_))
        ));
    }

    #[test]
    fn processing_instructions_are_refused() {
        let doc = format!("{HEADER}<?evil stuff?>");
        assert!(parse_all(doc.as_bytes(), Limits::default()).is_err());
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn default_namespace_is_reported_for_any_content_namespace() {
        let doc = "<?xml version='1.0'?><stream:stream xmlns='urn:example:x' \
            xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";
        let mut p = StreamParser::new(Limits::default());
        let mut out = Vec::new();
        p.feed(doc.as_bytes(), &mut out).unwrap();
        match out.first() {
            Some(StreamEvent::Header(h)) => assert_eq!(h.default_ns.as_deref(), Some("urn:example:x")),
            other => panic!("expected a header, got {other:?}"),
        }
    }
}
