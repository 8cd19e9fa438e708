//! tokio-xmpp (Rust) and slixmpp (Python) talk to each other through Jackdaw.
//!
//! bob is `tests/peers/slixmpp_echo.py`; alice is a tokio-xmpp `Client` on the
//! STARTTLS port. alice sends bob a chat message and must get `echo: <body>`
//! back from him. On failure the server log and bob's transcript are printed.

use std::time::Duration;

use futures::StreamExt as _;
use jackdaw_tests::TestServer;
use jackdaw_tests::peer::Peer;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::{Client, Event, Stanza};

const STEP: Duration = Duration::from_secs(20);

/// The next event from `client`; panics on timeout, end of stream or disconnect.
async fn next_event(client: &mut Client, waiting_for: &str) -> Event {
    match tokio::time::timeout(STEP, client.next()).await {
        Err(_) => panic!("alice: no {waiting_for} within {STEP:?}"),
        Ok(None) => panic!("alice: client stream ended while waiting for {waiting_for}"),
        Ok(Some(Event::Disconnected(e))) => {
            panic!("alice: disconnected while waiting for {waiting_for}: {e}")
        }
        Ok(Some(event)) => event,
    }
}

#[tokio::test]
async fn tokio_xmpp_and_slixmpp_exchange_a_message() {
    let server = TestServer::start();
    server.add_user("alice@localhost", "alice-pw");
    server.add_user("bob@localhost", "bob-pw");

    let port = server.c2s_addr().port().to_string();
    let cafile = server.cert_path();
    let mut bob = Peer::python(
        "slixmpp_echo.py",
        &[
            "--jid",
            "bob@localhost",
            "--password",
            "bob-pw",
            "--port",
            &port,
            "--cafile",
            cafile.to_str().expect("UTF-8 temp path"),
            "--timeout",
            "60",
        ],
    );
    bob.expect_line("READY", STEP).await;

    let mut alice = server.tokio_xmpp_client("alice@localhost", "alice-pw");
    let bound = loop {
        match next_event(&mut alice, "session").await {
            Event::Online { bound_jid, .. } => break bound_jid,
            other => eprintln!("alice: before online: {other:?}"),
        }
    };
    assert_eq!(bound.to_bare().as_str(), "alice@localhost", "bound JID {bound}");

    alice
        .send_stanza(Presence::new(PresenceType::None).into())
        .await
        .expect("alice sends initial presence");
    let body = "hello from tokio-xmpp";
    let to = "bob@localhost".parse().expect("bob's JID");
    let message = Message::chat(Some(to)).with_body(Default::default(), body.to_owned());
    alice
        .send_stanza(message.into())
        .await
        .expect("alice sends the message");

    let expected = format!("echo: {body}");
    loop {
        let Event::Stanza(stanza) = next_event(&mut alice, "echo").await else {
            continue;
        };
        let Stanza::Message(reply) = stanza else {
            eprintln!("alice: ignoring {stanza:?}");
            continue;
        };
        assert_ne!(
            reply.type_,
            MessageType::Error,
            "got an error instead of the echo: {reply:?}"
        );
        let from = reply.from.as_ref().map(|jid| jid.to_bare().to_string());
        assert_eq!(
            from.as_deref(),
            Some("bob@localhost"),
            "reply from the wrong sender: {reply:?}"
        );
        assert_eq!(
            reply.to.as_ref(),
            Some(&bound),
            "reply to the wrong address: {reply:?}"
        );
        // slixmpp marks its messages xml:lang='en': take the body in any language.
        let text = reply.get_best_body(vec![]).map(|(_, text)| text);
        assert_eq!(text, Some(&expected), "reply: {reply:?}");
        break;
    }

    alice.send_end().await.expect("alice closes her stream");
    let status = bob.wait(STEP).await;
    assert!(status.success(), "bob exited with {status}");
    server.stop();
}
