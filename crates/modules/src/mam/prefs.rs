//! Archiving preferences (XEP-0313 §6): a default mode and lists of JIDs
//! always or never archived, stored as the `<prefs/>` element itself.

use std::collections::BTreeSet;

use jackdaw_core::jid::Jid;
use jackdaw_core::minidom::Element;
use jackdaw_core::stanza;
use jackdaw_core::stream::ns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Always,
    Never,
    /// Only conversations with contacts in the user's roster.
    Roster,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Always => "always",
            Mode::Never => "never",
            Mode::Roster => "roster",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(Mode::Always),
            "never" => Some(Mode::Never),
            "roster" => Some(Mode::Roster),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    pub default: Mode,
    pub always: BTreeSet<String>,
    pub never: BTreeSet<String>,
}

impl Prefs {
    pub fn new(default: Mode) -> Self {
        Self {
            default,
            always: BTreeSet::new(),
            never: BTreeSet::new(),
        }
    }

    /// Whether to archive a conversation with the bare JID `with`; `None`
    /// when the answer depends on the roster.
    pub fn decide(&self, with: &str) -> Option<bool> {
        if self.never.contains(with) {
            return Some(false);
        }
        if self.always.contains(with) {
            return Some(true);
        }
        match self.default {
            Mode::Always => Some(true),
            Mode::Never => Some(false),
            Mode::Roster => None,
        }
    }

    /// From a client's `<prefs/>`; `None` if it is malformed.
    pub fn from_element(el: &Element) -> Option<Self> {
        if !el.is("prefs", ns::MAM) {
            return None;
        }
        let mut prefs = Prefs::new(Mode::parse(el.attr("default")?)?);
        for (list, name) in [(&mut prefs.always, "always"), (&mut prefs.never, "never")] {
            if let Some(group) = el.get_child(name, ns::MAM) {
                for jid in group.children().filter(|c| c.is("jid", ns::MAM)) {
                    // Lists hold bare JIDs (or domains); what is archived is
                    // matched on the other party's bare JID.
                    let parsed = Jid::new(jid.text().trim()).ok()?;
                    list.insert(parsed.to_bare().to_string());
                }
            }
        }
        Some(prefs)
    }

    pub fn parse_stored(text: &str) -> Option<Self> {
        Self::from_element(&text.parse().ok()?)
    }

    pub fn to_element(&self) -> Element {
        let mut el = Element::bare("prefs", ns::MAM);
        stanza::set_attr(&mut el, "default", self.default.name());
        for (list, name) in [(&self.always, "always"), (&self.never, "never")] {
            let mut group = Element::bare(name, ns::MAM);
            for jid in list {
                let mut j = Element::bare("jid", ns::MAM);
                j.append_text(jid.clone());
                group.append_child(j);
            }
            el.append_child(group);
        }
        el
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_win_over_the_default_and_round_trip() {
        let el: Element = "<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>a@x/res</jid></always><never><jid>b@x</jid></never></prefs>".parse().unwrap();
        let p = Prefs::from_element(&el).unwrap();
        assert_eq!(p.decide("a@x"), Some(true));
        assert_eq!(p.decide("b@x"), Some(false));
        assert_eq!(p.decide("c@x"), None);
        assert_eq!(Prefs::from_element(&p.to_element()), Some(p));
        let bad: Element = "<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>"
            .parse()
            .unwrap();
        assert!(Prefs::from_element(&bad).is_none());
    }
}
