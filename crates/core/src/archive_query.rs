//! Archive queries (XEP-0313 §4), shared by user archives (module `mam`)
//! and room archives (module `muc`): the search form, its filters, XEP-0059
//! paging, and the result messages that precede the `<fin/>`.

use std::str::FromStr;

use jid::Jid;
use minidom::Element;
use tracing::error;

use crate::stanza::{self, StanzaError};
use crate::storage::{ArchivePage, ArchiveQuery, ArchiveStore};
use crate::stream::ns;

/// Microseconds since the Unix epoch: archive timestamps.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A fresh archive id (also the XEP-0359 stanza-id): the time in
/// microseconds, then 64 random bits. Unique and unguessable, and rising
/// with time, so the store's id index grows at its end instead of at
/// random places (a random id costs a page read per message there).
pub fn new_archive_id() -> String {
    use rand::Rng;
    let random: u64 = rand::thread_rng().r#gen();
    format!("{:014x}{random:016x}", now_micros().max(0))
}

const XDATA_VALIDATE: &str = "http://jabber.org/protocol/xdata-validate";

/// The search form (§4.1.1).
pub fn form() -> Element {
    let mut x = Element::bare("x", ns::DATA_FORMS);
    stanza::set_attr(&mut x, "type", "form");
    let field = |var: &str, kind: &str| {
        let mut f = Element::bare("field", ns::DATA_FORMS);
        stanza::set_attr(&mut f, "var", var);
        stanza::set_attr(&mut f, "type", kind);
        f
    };
    let mut form_type = field("FORM_TYPE", "hidden");
    let mut value = Element::bare("value", ns::DATA_FORMS);
    value.append_text(ns::MAM);
    form_type.append_child(value);
    x.append_child(form_type);
    x.append_child(field("with", "jid-single"));
    for var in ["start", "end", "before-id", "after-id"] {
        x.append_child(field(var, "text-single"));
    }
    let mut ids = field("ids", "list-multi");
    let mut validate = Element::bare("validate", XDATA_VALIDATE);
    stanza::set_attr(&mut validate, "datatype", "xs:string");
    validate.append_child(Element::bare("open", XDATA_VALIDATE));
    ids.append_child(validate);
    x.append_child(ids);
    let mut query = Element::bare("query", ns::MAM);
    query.append_child(x);
    query
}

fn parse_time(text: &str) -> Result<i64, StanzaError> {
    xmpp_parsers::date::DateTime::from_str(text.trim())
        .map(|d| d.0.timestamp_micros())
        .map_err(|_| StanzaError::bad_request().with_text("start and end must be XEP-0082 date-times"))
}

/// XEP-0082 date-time with microseconds, for the result's delay stamp.
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let base = stanza::format_stamp(secs.max(0) as u64);
    // format_stamp ends in 'Z'; put the fraction before it.
    format!("{}.{fraction:06}Z", base.trim_end_matches('Z'))
}

/// Reads the form and the RSM set into a store query.
fn parse(query: &Element, max_results: usize) -> Result<ArchiveQuery, StanzaError> {
    let mut q = ArchiveQuery {
        max: max_results,
        ..Default::default()
    };
    if let Some(x) = query.get_child("x", ns::DATA_FORMS) {
        for field in x.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
            let values: Vec<String> = field
                .children()
                .filter(|c| c.is("value", ns::DATA_FORMS))
                .map(|v| v.text())
                .collect();
            let value = values
                .first()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty());
            match field.attr("var").unwrap_or_default() {
                "FORM_TYPE" => {
                    if value.as_deref() != Some(ns::MAM) {
                        return Err(StanzaError::bad_request().with_text("FORM_TYPE must be urn:xmpp:mam:2"));
                    }
                }
                "with" => {
                    if let Some(v) = value {
                        let jid = Jid::new(&v).map_err(|_| StanzaError::jid_malformed())?;
                        q.with = Some(jid.to_string());
                    }
                }
                "start" => q.start = value.as_deref().map(parse_time).transpose()?,
                "end" => q.end = value.as_deref().map(parse_time).transpose()?,
                "after-id" => q.after_id = value,
                "before-id" => q.before_id = value,
                "ids" => q.ids = values.into_iter().map(|v| v.trim().to_string()).collect(),
                other => {
                    return Err(StanzaError::feature_not_implemented()
                        .with_text(format!("unsupported search field {other:?}")));
                }
            }
        }
    }
    if let Some(set) = query.get_child("set", ns::RSM) {
        if let Some(max) = set.get_child("max", ns::RSM) {
            let n: usize = max
                .text()
                .trim()
                .parse()
                .map_err(|_| StanzaError::bad_request().with_text("RSM max must be a number"))?;
            q.max = n.min(max_results);
        }
        if let Some(after) = set.get_child("after", ns::RSM) {
            q.page_after = Some(after.text().trim().to_string()).filter(|a| !a.is_empty());
        }
        if let Some(before) = set.get_child("before", ns::RSM) {
            q.page_before = Some(before.text().trim().to_string());
        }
    }
    Ok(q)
}

/// Runs a query on `owner`'s archive for the full JID `to`: the result
/// messages, to send in order before the returned `<fin/>`.
pub async fn run(
    store: &dyn ArchiveStore,
    max_results: usize,
    owner: &str,
    to: &str,
    query: &Element,
) -> Result<(Vec<Element>, Element), StanzaError> {
    let q = parse(query, max_results)?;
    let page = match store.query(owner, &q).await {
        Ok(Some(page)) => page,
        Ok(None) => return Err(StanzaError::item_not_found().with_text("no such archive id")),
        Err(e) => {
            error!(error = %e, "archive query failed");
            return Err(StanzaError::internal_server_error());
        }
    };
    let query_id = query.attr("queryid");
    let flip = query.has_child("flip-page", ns::MAM);
    let mut messages: Vec<_> = page.messages.iter().collect();
    if flip {
        messages.reverse();
    }
    let mut results = Vec::with_capacity(messages.len());
    for m in messages {
        let Ok(original) = m.stanza.parse::<Element>() else {
            error!(id = %m.id, "unreadable archived message skipped");
            continue;
        };
        let mut result = Element::bare("result", ns::MAM);
        if let Some(qid) = query_id {
            stanza::set_attr(&mut result, "queryid", qid);
        }
        stanza::set_attr(&mut result, "id", m.id.as_str());
        let mut forwarded = Element::bare("forwarded", ns::FORWARD);
        let mut delay = Element::bare("delay", ns::DELAY);
        stanza::set_attr(&mut delay, "stamp", format_micros(m.timestamp));
        forwarded.append_child(delay);
        forwarded.append_child(original);
        result.append_child(forwarded);
        let mut wrapper = stanza::new_stanza("message", &[("from", owner), ("to", to)]);
        wrapper.append_child(result);
        results.push(wrapper);
    }
    Ok((results, fin(&page, flip)))
}

fn fin(page: &ArchivePage, flip: bool) -> Element {
    let mut fin = Element::bare("fin", ns::MAM);
    if page.complete {
        stanza::set_attr(&mut fin, "complete", "true");
    }
    let mut set = Element::bare("set", ns::RSM);
    let (first, last) = match (page.messages.first(), page.messages.last()) {
        (Some(f), Some(l)) if flip => (Some(l), Some(f)),
        (f, l) => (f, l),
    };
    if let (Some(first), Some(last)) = (first, last) {
        let mut f = Element::bare("first", ns::RSM);
        stanza::set_attr(&mut f, "index", page.first_index.to_string());
        f.append_text(first.id.clone());
        set.append_child(f);
        let mut l = Element::bare("last", ns::RSM);
        l.append_text(last.id.clone());
        set.append_child(l);
    }
    let mut count = Element::bare("count", ns::RSM);
    count.append_text(page.count.to_string());
    set.append_child(count);
    fin.append_child(set);
    fin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_and_rsm_parse() {
        let query: Element = "<query xmlns='urn:xmpp:mam:2' queryid='q'>\
            <x xmlns='jabber:x:data' type='submit'>\
              <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
              <field var='with'><value>bob@x</value></field>\
              <field var='start'><value>2026-01-01T00:00:00Z</value></field>\
            </x>\
            <set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set>\
          </query>"
            .parse()
            .unwrap();
        let q = parse(&query, 50).unwrap();
        assert_eq!(q.with.as_deref(), Some("bob@x"));
        assert_eq!(q.start, Some(1_767_225_600_000_000));
        assert_eq!(q.max, 50, "capped by max_archive_query_results");
        assert_eq!(q.page_before.as_deref(), Some(""));
        let unknown: Element = "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
              <field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field><field var='colour'><value>red</value></field>\
            </x></query>"
            .parse()
            .unwrap();
        assert!(parse(&unknown, 50).is_err());
    }

    #[test]
    fn stamps_carry_microseconds() {
        assert_eq!(
            format_micros(1_767_225_600_000_042),
            "2026-01-01T00:00:00.000042Z"
        );
    }
}
