//! A lean, incremental scanner for the server's side of an XMPP stream, and
//! a borrowed view for reading the few things a load generator looks at.
//!
//! Why not rxml + minidom, as the server uses: the load generator runs on
//! one core against a server on the other, and for every chat message the
//! server parses once, so the client must parse for less than the server
//! or it measures itself. It needs only where each top-level element ends,
//! its name and a few attributes, and a text child (`<body>`, `<jid>`, a
//! SASL challenge). Building a tree per stanza would allocate per element
//! and attribute; this scanner finds stanza boundaries with `memchr`, hands
//! out `&str` slices of its buffer, and reads attributes and children
//! lazily from that text.
//!
//! What it gives up: it trusts the server to send well-formed XML (it only
//! checks UTF-8 and nesting), ignores namespace declarations (elements are
//! matched by local name, which is unambiguous in the stanzas it reads), and
//! decodes only the five predefined entities and character references.

use std::borrow::Cow;

use memchr::memchr;
use thiserror::Error;

/// What the peer sent that this scanner cannot accept.
#[derive(Debug, Error)]
pub enum ScanError {
    #[error("stanza larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid UTF-8 in a stanza")]
    Utf8,
    #[error("unexpected markup: {0}")]
    Markup(&'static str),
}

/// One event of the stream.
#[derive(Debug)]
pub enum Frame<'a> {
    /// `<stream:stream ...>` (its attributes are not needed).
    Header,
    /// A complete top-level element (stanza, features, SASL, ...).
    Stanza(Elem<'a>),
    /// `</stream:stream>`.
    End,
}

/// Splits the bytes of one stream into [`Frame`]s.
pub struct Scanner {
    buf: Vec<u8>,
    /// The next byte to look at.
    pos: usize,
    /// 0 outside the stream, 1 inside it, 2 and more inside a stanza.
    depth: usize,
    /// Where the stanza being read starts (valid while `depth >= 2`).
    stanza_start: usize,
    max_stanza: usize,
}

impl Scanner {
    pub fn new(max_stanza: usize) -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            pos: 0,
            depth: 0,
            stanza_start: 0,
            max_stanza,
        }
    }

    /// Forgets everything: a stream restart after STARTTLS or SASL.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.depth = 0;
        self.stanza_start = 0;
    }

    /// Releases the buffer's spare capacity (for idle sessions, where a
    /// large buffer per connection would inflate the generator's memory).
    pub fn shrink(&mut self) {
        self.compact();
        self.buf.shrink_to(1024);
    }

    /// Appends bytes read from the socket.
    pub fn feed(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Drops bytes no frame can refer to any more.
    fn compact(&mut self) {
        let keep_from = if self.depth >= 2 {
            self.stanza_start
        } else {
            self.pos
        };
        if keep_from == 0 {
            return;
        }
        self.buf.drain(..keep_from);
        self.pos -= keep_from;
        if self.depth >= 2 {
            self.stanza_start = 0;
        }
    }

    /// The next complete frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ScanError> {
        loop {
            let Some(off) = memchr(b'<', &self.buf[self.pos..]) else {
                // Text (or keepalive whitespace) only: nothing to return yet.
                self.pos = self.buf.len();
                self.check_size()?;
                return Ok(None);
            };
            let at = self.pos + off;
            let Some(len) = markup_len(&self.buf[at..])? else {
                self.pos = at;
                self.check_size()?;
                return Ok(None);
            };
            let end = at + len;
            self.pos = end;
            let tag = &self.buf[at..end];
            match tag[1] {
                // XML declaration, comment, CDATA: not structure.
                b'?' | b'!' => continue,
                b'/' => match self.depth {
                    0 => return Err(ScanError::Markup("end tag outside the stream")),
                    1 => {
                        self.depth = 0;
                        return Ok(Some(Frame::End));
                    }
                    2 => {
                        self.depth = 1;
                        let text = utf8(&self.buf[self.stanza_start..end])?;
                        return Ok(Some(Frame::Stanza(Elem::new(text))));
                    }
                    _ => self.depth -= 1,
                },
                _ => {
                    let empty = tag[len - 2] == b'/';
                    match (self.depth, empty) {
                        (0, _) => {
                            self.depth = 1;
                            return Ok(Some(Frame::Header));
                        }
                        (1, true) => {
                            let text = utf8(&self.buf[at..end])?;
                            return Ok(Some(Frame::Stanza(Elem::new(text))));
                        }
                        (1, false) => {
                            self.stanza_start = at;
                            self.depth = 2;
                        }
                        (_, true) => {}
                        (_, false) => self.depth += 1,
                    }
                }
            }
        }
    }

    fn check_size(&self) -> Result<(), ScanError> {
        let pending = if self.depth >= 2 {
            self.buf.len() - self.stanza_start
        } else {
            self.buf.len() - self.pos
        };
        if pending > self.max_stanza {
            return Err(ScanError::TooLarge(self.max_stanza));
        }
        Ok(())
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, ScanError> {
    std::str::from_utf8(bytes).map_err(|_| ScanError::Utf8)
}

/// Length of the markup starting at `b[0] == b'<'`, or `None` if it is not
/// complete yet.
fn markup_len(b: &[u8]) -> Result<Option<usize>, ScanError> {
    fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
        memchr::memmem::find(&b[from..], pat).map(|i| from + i + pat.len())
    }
    if b.len() < 2 {
        return Ok(None);
    }
    match b[1] {
        b'?' => Ok(find(b, 2, b"?>")),
        b'!' => {
            if b.len() < 4 {
                Ok(None)
            } else if b.starts_with(b"<!--") {
                Ok(find(b, 4, b"-->"))
            } else if b.len() < 9 {
                Ok(None)
            } else if b.starts_with(b"<![CDATA[") {
                Ok(find(b, 9, b"]]>"))
            } else {
                Err(ScanError::Markup("DTD"))
            }
        }
        _ => Ok(tag_len(b)),
    }
}

/// Length of a start or end tag, skipping `>` inside quoted attribute values.
fn tag_len(b: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'>' => return Some(i + 1),
            q @ (b'"' | b'\'') => {
                i += 1 + memchr(q, &b[i + 1..])?;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A borrowed element: its start tag and, unless empty, its content.
#[derive(Debug, Clone, Copy)]
pub struct Elem<'a> {
    /// The whole element (for a stream header, only its start tag).
    raw: &'a str,
    /// Length of the start tag within `raw`.
    tag_len: usize,
}

impl<'a> Elem<'a> {
    /// `raw` must start with a complete start tag.
    fn new(raw: &'a str) -> Self {
        let tag_len = tag_len(raw.as_bytes()).unwrap_or(raw.len());
        Elem { raw, tag_len }
    }

    /// The element as the server sent it.
    #[cfg(test)]
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    fn start_tag(&self) -> &'a str {
        &self.raw[..self.tag_len]
    }

    fn is_empty_tag(&self) -> bool {
        self.start_tag().ends_with("/>")
    }

    /// The qualified name as written, e.g. `stream:features`.
    pub fn qname(&self) -> &'a str {
        let t = &self.start_tag()[1..];
        let end = t
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .unwrap_or(t.len());
        &t[..end]
    }

    /// The local name, without a prefix.
    pub fn name(&self) -> &'a str {
        let q = self.qname();
        q.rsplit(':').next().unwrap_or(q)
    }

    /// An attribute by its qualified name (`type`, `xmlns`, `xml:lang`).
    pub fn attr(&self, name: &str) -> Option<Cow<'a, str>> {
        let tag = self.start_tag();
        let mut rest = &tag[1 + self.qname().len()..];
        loop {
            rest = rest.trim_start();
            let eq = rest.find('=')?;
            let key = rest[..eq].trim_end();
            let after = rest[eq + 1..].trim_start();
            let quote = after.chars().next()?;
            if quote != '"' && quote != '\'' {
                return None;
            }
            let close = after[1..].find(quote)?;
            let value = &after[1..1 + close];
            if key == name {
                return Some(unescape(value));
            }
            rest = &after[close + 2..];
        }
    }

    /// What lies between the start and end tags.
    fn content(&self) -> &'a str {
        if self.is_empty_tag() || self.tag_len >= self.raw.len() {
            return "";
        }
        let inner = &self.raw[self.tag_len..];
        // The end tag is the last markup of `raw`.
        match inner.rfind("</") {
            Some(i) => &inner[..i],
            None => inner,
        }
    }

    /// The direct children, in order.
    pub fn children(&self) -> Children<'a> {
        Children { rest: self.content() }
    }

    /// The first direct child with this local name.
    pub fn child(&self, name: &str) -> Option<Elem<'a>> {
        self.children().find(|c| c.name() == name)
    }

    /// The text directly inside this element (children skipped), decoded.
    pub fn text(&self) -> Cow<'a, str> {
        let content = self.content();
        if !content.contains('<') {
            return unescape(content);
        }
        let mut out = String::new();
        let mut rest = content;
        let mut depth = 0usize;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                if depth == 0 {
                    out.push_str(&unescape(rest));
                }
                break;
            };
            if depth == 0 {
                out.push_str(&unescape(&rest[..lt]));
            }
            let b = &rest.as_bytes()[lt..];
            let len = match markup_len(b) {
                Ok(Some(n)) => n,
                _ => break,
            };
            let markup = &rest[lt..lt + len];
            if let Some(cdata) = markup.strip_prefix("<![CDATA[") {
                if depth == 0 {
                    out.push_str(cdata.strip_suffix("]]>").unwrap_or(cdata));
                }
            } else if markup.starts_with("</") {
                depth = depth.saturating_sub(1);
            } else if !markup.starts_with("<?") && !markup.starts_with("<!") && !markup.ends_with("/>") {
                depth += 1;
            }
            rest = &rest[lt + len..];
        }
        Cow::Owned(out)
    }
}

/// Iterator over an element's direct children.
pub struct Children<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Children<'a> {
    type Item = Elem<'a>;

    fn next(&mut self) -> Option<Elem<'a>> {
        loop {
            let lt = self.rest.find('<')?;
            let s = &self.rest[lt..];
            let len = markup_len(s.as_bytes()).ok()??;
            let b = s.as_bytes();
            if matches!(b[1], b'?' | b'!' | b'/') {
                self.rest = &s[len..];
                continue;
            }
            if s[..len].ends_with("/>") {
                self.rest = &s[len..];
                return Some(Elem::new(&s[..len]));
            }
            // Find the matching end tag by counting depth.
            let mut depth = 1usize;
            let mut i = len;
            while depth > 0 {
                let next = s[i..].find('<')? + i;
                let l = markup_len(&b[next..]).ok()??;
                let m = &s[next..next + l];
                if m.starts_with("</") {
                    depth -= 1;
                } else if !(m.starts_with("<?") || m.starts_with("<!") || m.ends_with("/>")) {
                    depth += 1;
                }
                i = next + l;
            }
            self.rest = &s[i..];
            return Some(Elem::new(&s[..i]));
        }
    }
}

/// Decodes the predefined entities and character references.
pub fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';') else {
            out.push_str(&rest[amp..]);
            return Cow::Owned(out);
        };
        let entity = &after[..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[amp..amp + 2 + semi]),
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Escapes text or an attribute value for sending.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['<', '>', '&', '\'', '"']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='x' version='1.0'>";

    /// Every frame of `input`, fed in chunks of `chunk` bytes, as (kind, raw).
    fn frames(input: &str, chunk: usize) -> Vec<(String, String)> {
        let mut s = Scanner::new(1 << 20);
        let mut out = Vec::new();
        for part in input.as_bytes().chunks(chunk) {
            s.feed(part);
            while let Some(f) = s.next_frame().expect("scans") {
                out.push(match f {
                    Frame::Header => ("header".into(), String::new()),
                    Frame::Stanza(e) => ("stanza".into(), e.raw().to_string()),
                    Frame::End => ("end".into(), String::new()),
                });
            }
        }
        out
    }

    #[test]
    fn splits_stanzas_whatever_the_chunking() {
        let features = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
            <mechanism>SCRAM-SHA-256</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
        let msg = "<message from='a@b/c' to='d@e' type='chat'><body>x &gt; y</body></message>";
        let empty = "<presence from='a@b/c'/>";
        let input = format!("{HEADER}{features} \n{msg}{empty}</stream:stream>");
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let got = frames(&input, chunk);
            assert_eq!(got.len(), 5, "chunk {chunk}: {got:?}");
            assert_eq!(got[0].0, "header");
            assert_eq!(got[1], ("stanza".into(), features.into()));
            assert_eq!(got[2], ("stanza".into(), msg.into()));
            assert_eq!(got[3], ("stanza".into(), empty.into()));
            assert_eq!(got[4].0, "end");
        }
    }

    #[test]
    fn quoted_gt_and_cdata_do_not_end_a_stanza() {
        let msg = "<message a='1>2'><body><![CDATA[<not a tag>]]></body></message>";
        let got = frames(&format!("{HEADER}{msg}"), 5);
        assert_eq!(got[1].1, msg);
        let mut s = Scanner::new(1024);
        s.feed(format!("{HEADER}{msg}").as_bytes());
        let _header = s.next_frame().expect("ok");
        let Some(Frame::Stanza(m)) = s.next_frame().expect("ok") else {
            panic!("no stanza")
        };
        assert_eq!(m.attr("a").as_deref(), Some("1>2"));
        assert_eq!(m.child("body").expect("body").text(), "<not a tag>");
    }

    #[test]
    fn reads_names_attributes_children_and_text() {
        let raw = "<iq type=\"result\" id='b&amp;1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
            <jid>u@localhost/r</jid></bind></iq>";
        let e = Elem::new(raw);
        assert_eq!(e.name(), "iq");
        assert_eq!(e.attr("type").as_deref(), Some("result"));
        assert_eq!(e.attr("id").as_deref(), Some("b&1"));
        assert_eq!(e.attr("to"), None);
        let bind = e.child("bind").expect("bind");
        assert_eq!(
            bind.attr("xmlns").as_deref(),
            Some("urn:ietf:params:xml:ns:xmpp-bind")
        );
        assert_eq!(bind.child("jid").expect("jid").text(), "u@localhost/r");

        let f = Elem::new(
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
             <mechanisms><mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-256</mechanism></mechanisms>\
             </stream:features>",
        );
        assert_eq!(f.qname(), "stream:features");
        assert_eq!(f.name(), "features");
        let names: Vec<_> = f.children().map(|c| c.name()).collect();
        assert_eq!(names, ["starttls", "mechanisms"]);
        let mechs: Vec<_> = f
            .child("mechanisms")
            .expect("mechanisms")
            .children()
            .map(|m| m.text().into_owned())
            .collect();
        assert_eq!(mechs, ["PLAIN", "SCRAM-SHA-256"]);
    }

    #[test]
    fn text_skips_children_and_decodes() {
        let e = Elem::new("<a>1 &lt; <b>x</b>2&#x41;&#66;<c/></a>");
        assert_eq!(e.text(), "1 < 2AB");
    }

    #[test]
    fn refuses_oversized_stanzas_and_doctype() {
        let mut s = Scanner::new(64);
        s.feed(HEADER.as_bytes());
        assert!(matches!(s.next_frame(), Ok(Some(Frame::Header))));
        s.feed(format!("<message>{}", "x".repeat(100)).as_bytes());
        assert!(matches!(s.next_frame(), Err(ScanError::TooLarge(64))));

        let mut s = Scanner::new(64);
        s.feed(b"<!DOCTYPE x>");
        assert!(matches!(s.next_frame(), Err(ScanError::Markup(_))));
    }

    #[test]
    fn escape_round_trips() {
        let s = "a<b>&'\"";
        assert_eq!(unescape(&escape(s)), s);
    }
}
