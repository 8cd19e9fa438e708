//! The room configuration form (XEP-0045 §10.2, XEP-0004 `jabber:x:data`).

use jackdaw_core::minidom::Element;
use jackdaw_core::stanza::{self, StanzaError};
use jackdaw_core::stream::ns;

use super::room::RoomConfig;

const FORM_TYPE: &str = "http://jabber.org/protocol/muc#roomconfig";

fn field(var: &str, kind: &str, label: &str, values: &[String]) -> Element {
    let mut f = Element::bare("field", ns::DATA_FORMS);
    stanza::set_attr(&mut f, "var", var);
    stanza::set_attr(&mut f, "type", kind);
    if !label.is_empty() {
        stanza::set_attr(&mut f, "label", label);
    }
    for v in values {
        let mut value = Element::bare("value", ns::DATA_FORMS);
        value.append_text(v.clone());
        f.append_child(value);
    }
    f
}

fn boolean(v: bool) -> Vec<String> {
    vec![if v { "1" } else { "0" }.to_string()]
}

/// The form an owner gets, filled with the current values.
pub fn config_form(c: &RoomConfig) -> Element {
    let mut x = Element::bare("x", ns::DATA_FORMS);
    stanza::set_attr(&mut x, "type", "form");
    let mut title = Element::bare("title", ns::DATA_FORMS);
    title.append_text("Room configuration");
    x.append_child(title);
    x.append_child(field("FORM_TYPE", "hidden", "", &[FORM_TYPE.to_string()]));
    x.append_child(field(
        "muc#roomconfig_roomname",
        "text-single",
        "Name",
        std::slice::from_ref(&c.name),
    ));
    x.append_child(field(
        "muc#roomconfig_roomdesc",
        "text-single",
        "Description",
        std::slice::from_ref(&c.description),
    ));
    x.append_child(field(
        "muc#roomconfig_persistentroom",
        "boolean",
        "Persistent",
        &boolean(c.persistent),
    ));
    x.append_child(field(
        "muc#roomconfig_publicroom",
        "boolean",
        "Listed publicly",
        &boolean(c.public),
    ));
    x.append_child(field(
        "muc#roomconfig_membersonly",
        "boolean",
        "Members only",
        &boolean(c.members_only),
    ));
    x.append_child(field(
        "muc#roomconfig_moderatedroom",
        "boolean",
        "Moderated",
        &boolean(c.moderated),
    ));
    x.append_child(field(
        "muc#roomconfig_passwordprotectedroom",
        "boolean",
        "Password protected",
        &boolean(c.password.is_some()),
    ));
    x.append_child(field(
        "muc#roomconfig_roomsecret",
        "text-private",
        "Password",
        &[c.password.clone().unwrap_or_default()],
    ));
    let mut whois = field(
        "muc#roomconfig_whois",
        "list-single",
        "Who may see real JIDs",
        &[if c.whois_anyone { "anyone" } else { "moderators" }.to_string()],
    );
    for opt in ["moderators", "anyone"] {
        let mut o = Element::bare("option", ns::DATA_FORMS);
        let mut v = Element::bare("value", ns::DATA_FORMS);
        v.append_text(opt);
        o.append_child(v);
        whois.append_child(o);
    }
    x.append_child(whois);
    x.append_child(field(
        "muc#roomconfig_maxusers",
        "text-single",
        "Maximum occupants",
        &[c.max_users.to_string()],
    ));
    x.append_child(field(
        "muc#roomconfig_historylength",
        "text-single",
        "Messages of history",
        &[c.history_length.to_string()],
    ));
    x.append_child(field(
        "muc#roomconfig_allowinvites",
        "boolean",
        "Occupants may invite",
        &boolean(c.allow_invites),
    ));
    x.append_child(field(
        "muc#roomconfig_changesubject",
        "boolean",
        "Occupants may change the subject",
        &boolean(c.change_subject),
    ));
    x
}

fn parse_bool(v: &str) -> Result<bool, StanzaError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(StanzaError::bad_request().with_text(format!("{v:?} is not a boolean"))),
    }
}

/// Applies a submitted form; unknown fields are ignored (XEP-0004 §3.3).
pub fn apply(form: &Element, c: &mut RoomConfig, max_history: usize) -> Result<(), StanzaError> {
    let mut password_protected = c.password.is_some();
    let mut secret = c.password.clone();
    for f in form.children().filter(|f| f.is("field", ns::DATA_FORMS)) {
        let Some(var) = f.attr("var") else { continue };
        let values: Vec<String> = f
            .children()
            .filter(|v| v.is("value", ns::DATA_FORMS))
            .map(|v| v.text())
            .collect();
        let first = values.first().cloned().unwrap_or_default();
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| StanzaError::bad_request().with_text(format!("{var}: not a number")))
        };
        match var {
            "muc#roomconfig_roomname" => c.name = first,
            "muc#roomconfig_roomdesc" => c.description = first,
            "muc#roomconfig_persistentroom" => c.persistent = parse_bool(&first)?,
            "muc#roomconfig_publicroom" => c.public = parse_bool(&first)?,
            "muc#roomconfig_membersonly" => c.members_only = parse_bool(&first)?,
            "muc#roomconfig_moderatedroom" => c.moderated = parse_bool(&first)?,
            "muc#roomconfig_passwordprotectedroom" => password_protected = parse_bool(&first)?,
            "muc#roomconfig_roomsecret" => secret = Some(first).filter(|s| !s.is_empty()),
            "muc#roomconfig_whois" => c.whois_anyone = first == "anyone",
            "muc#roomconfig_maxusers" => c.max_users = if first.is_empty() { 0 } else { number(&first)? },
            "muc#roomconfig_historylength" => c.history_length = number(&first)?.min(max_history),
            "muc#roomconfig_allowinvites" => c.allow_invites = parse_bool(&first)?,
            "muc#roomconfig_changesubject" => c.change_subject = parse_bool(&first)?,
            _ => {}
        }
    }
    c.password = if password_protected { secret } else { None };
    if password_protected && c.password.is_none() {
        return Err(
            StanzaError::new(jackdaw_core::stanza::ErrorType::Modify, "not-acceptable")
                .with_text("a password-protected room needs a password"),
        );
    }
    Ok(())
}

/// The registration form of XEP-0045 §7.10.
pub fn register_form() -> Element {
    let mut x = Element::bare("x", ns::DATA_FORMS);
    stanza::set_attr(&mut x, "type", "form");
    x.append_child(field(
        "FORM_TYPE",
        "hidden",
        "",
        &["http://jabber.org/protocol/muc#register".to_string()],
    ));
    let mut nick = field("muc#register_roomnick", "text-single", "Nickname", &[]);
    nick.append_child(Element::bare("required", ns::DATA_FORMS));
    x.append_child(nick);
    x
}
