//! `stream_parse`: how fast [`StreamParser`] turns a client's bytes into
//! stanzas.
//!
//! Every byte a client sends goes through this parser (rxml plus the limit
//! checks and the `minidom::Element` building in
//! `jackdaw_core::stream::parser`) before anything else can look at it, on
//! the connection's own task; its cost per stanza is a floor under the
//! server's messages/s per core. The input is a stream header followed by
//! the traffic a chatting client sends: chat messages with bodies and chat
//! states, presences with show/status/caps, roster gets and pings, fed in
//! 4 KiB chunks as a socket read would deliver them (stanzas straddle
//! chunk boundaries). Throughput is reported in bytes and in stanzas.
//!
//! `stream_parse/rxml_events_only` runs rxml alone over the same chunks,
//! without building elements or checking limits: the gap between it and
//! `stream_parse/bytes` is what Jackdaw's own layer costs.
//!
//! A second group, `stream_serialize`, measures the way back out
//! (`jackdaw_core::stream::serialize`, called by each session's writer for
//! every stanza it delivers), over the same stanzas.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jackdaw_core::minidom::Element;
use jackdaw_core::stream::{self, Limits, StreamEvent, StreamParser};
use rxml::Parse as _;

/// What `read()` typically hands the parser.
const CHUNK: usize = 4096;
/// Stanzas in the benchmark stream: enough for ~100 chunks.
const STANZAS: usize = 1200;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.org' \
    version='1.0' xml:lang='en'>";

/// The `i`th stanza of a typical client's traffic: mostly chat, some
/// presence, some IQs (the mix a busy chat client sends).
fn stanza(i: usize) -> String {
    let to = format!("user{}@example.org", i % 97);
    match i % 10 {
        0..=4 => format!(
            "<message type='chat' to='{to}' id='msg-{i:08x}' xml:lang='en'>\
             <body>Hello there, this is message number {i}; are we still on for \
             lunch tomorrow at noon &amp; the meeting after?</body>\
             <active xmlns='http://jabber.org/protocol/chatstates'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='3f1c2b9e-{i:08x}'/>\
             <request xmlns='urn:xmpp:receipts'/></message>"
        ),
        5 => format!(
            "<message type='chat' to='{to}' id='cs-{i:08x}'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ),
        6 => format!(
            "<presence id='p-{i:08x}'><show>away</show><status>In a meeting until 3pm</status>\
             <priority>5</priority><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
             node='https://conversations.im' ver='9aT2DmRhxnGJkUmAnSlV1TcrYUU='/></presence>"
        ),
        7 => format!("<presence to='{to}' type='subscribe' id='sub-{i:08x}'/>"),
        8 => {
            format!("<iq type='get' id='roster-{i:08x}'><query xmlns='jabber:iq:roster' ver='ver{i}'/></iq>")
        }
        _ => format!("<iq type='get' id='ping-{i:08x}' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>"),
    }
}

fn corpus() -> Vec<u8> {
    let mut doc = String::from(HEADER);
    for i in 0..STANZAS {
        doc.push_str(&stanza(i));
        // Some clients separate stanzas with newlines (whitespace keepalive).
        if i % 3 == 0 {
            doc.push('\n');
        }
    }
    doc.into_bytes()
}

/// Parses the whole stream in `CHUNK`-sized pieces, as the c2s reader
/// does, and returns the stanzas seen. Events are dropped chunk by chunk,
/// as the reader hands them on.
fn parse(doc: &[u8]) -> usize {
    let mut parser = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    let mut stanzas = 0;
    for chunk in doc.chunks(CHUNK) {
        parser.feed(chunk, &mut out).expect("the corpus is well-formed");
        for ev in out.drain(..) {
            if let StreamEvent::Stanza(el) = ev {
                stanzas += 1;
                black_box(el);
            }
        }
    }
    stanzas
}

/// rxml's namespace-resolving parser over the same chunks, events
/// counted and dropped: the floor under [`parse`].
fn rxml_events(doc: &[u8]) -> usize {
    let mut parser = rxml::Parser::new();
    let mut events = 0;
    for chunk in doc.chunks(CHUNK) {
        let mut data = chunk;
        loop {
            match parser.parse(&mut data, false) {
                Ok(Some(ev)) => {
                    events += 1;
                    black_box(ev);
                }
                Ok(None) | Err(rxml::error::EndOrError::NeedMoreData) => break,
                Err(rxml::error::EndOrError::Error(e)) => panic!("the corpus is well-formed: {e}"),
            }
        }
    }
    events
}

fn bench_parse(c: &mut Criterion) {
    let doc = corpus();
    assert_eq!(parse(&doc), STANZAS, "every stanza of the corpus parses");

    let mut group = c.benchmark_group("stream_parse");
    group.throughput(Throughput::Bytes(doc.len() as u64));
    group.bench_function("bytes", |b| b.iter(|| parse(black_box(&doc))));
    group.throughput(Throughput::Elements(STANZAS as u64));
    group.bench_function("stanzas", |b| b.iter(|| parse(black_box(&doc))));
    group.throughput(Throughput::Bytes(doc.len() as u64));
    group.bench_function("rxml_events_only", |b| b.iter(|| rxml_events(black_box(&doc))));
    group.finish();
}

fn bench_serialize(c: &mut Criterion) {
    let doc = corpus();
    let mut parser = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    parser.feed(&doc, &mut out).expect("the corpus is well-formed");
    let stanzas: Vec<Element> = out
        .into_iter()
        .filter_map(|ev| match ev {
            StreamEvent::Stanza(el) => Some(el),
            _ => None,
        })
        .collect();
    let bytes: usize = stanzas.iter().map(|el| stream::serialize(el).len()).sum();

    let mut group = c.benchmark_group("stream_serialize");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("bytes", |b| {
        b.iter(|| {
            for el in &stanzas {
                black_box(stream::serialize(black_box(el)));
            }
        })
    });
    group.throughput(Throughput::Elements(stanzas.len() as u64));
    group.bench_function("stanzas", |b| {
        b.iter(|| {
            for el in &stanzas {
                black_box(stream::serialize(black_box(el)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse, bench_serialize);
criterion_main!(benches);
