"""SASL details below what slixmpp shows: the advertised mechanisms and
channel-binding types (XEP-0440), SCRAM-PLUS with tls-server-end-point,
and the bindings a server must refuse (RFC 5802 §6, RFC 9266)."""

from __future__ import annotations

import pytest

from harness import PASSWORDS
from harness.channel_binding import ChannelBindingUnavailable, compute
from harness.raw import RawStream, channel_binding_types_of, mechanisms_of
from harness.scenarios import assert_server_still_serves
from harness.scram import ScramClient

TRANSPORTS = {"starttls": False, "direct_tls": True}
ALL_MECHANISMS = {"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"}


def encrypted_stream(server, transport: str) -> tuple[RawStream, object]:
    stream = RawStream.connect(
        server.direct_tls_port if TRANSPORTS[transport] else server.c2s_port,
        direct_tls=TRANSPORTS[transport],
    )
    features = stream.connect_encrypted(TRANSPORTS[transport])
    return stream, features


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mechanisms_and_channel_bindings_advertised(server, transport):
    """Over TLS the server offers PLAIN, SCRAM-SHA-1/-256 and their -PLUS
    variants, and advertises tls-exporter and tls-server-end-point (XEP-0440)."""
    stream, features = encrypted_stream(server, transport)
    with stream:
        assert ALL_MECHANISMS <= set(mechanisms_of(features)), stream.dump()
        assert {"tls-exporter", "tls-server-end-point"} <= set(channel_binding_types_of(features)), stream.dump()


@pytest.mark.parametrize("binding", ["tls-server-end-point", "tls-exporter"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_scram_plus_with_binding_type(server, transport, mechanism, binding):
    """A client binding SCRAM to the TLS channel with either advertised type
    logs in, and the server proves it knows alice's password."""
    stream, _ = encrypted_stream(server, transport)
    with stream:
        try:
            data = compute(binding, stream.ssl_object)
        except ChannelBindingUnavailable as problem:
            pytest.skip(f"client cannot compute {binding}: {problem}")
        scram = ScramClient(mechanism, "alice", PASSWORDS["alice"], cb_type=binding, cb_data=data)
        outcome = stream.auth_scram(scram, mechanism)
        assert outcome.success, f"{mechanism} with {binding} refused ({outcome.condition})\n{stream.dump()}"
        assert stream.bind("cb").startswith("alice@localhost/")


def test_scram_plus_with_wrong_binding_data_refused(server):
    """Channel-binding data from another connection (a man in the middle's
    view) does not log in, though the password is right."""
    stream, _ = encrypted_stream(server, "starttls")
    with stream:
        wrong = bytes(32)  # not this connection's exporter value
        scram = ScramClient("SCRAM-SHA-256-PLUS", "alice", PASSWORDS["alice"], cb_type="tls-exporter", cb_data=wrong)
        outcome = stream.auth_scram(scram, "SCRAM-SHA-256-PLUS")
        assert not outcome.success, stream.dump()
        assert outcome.condition == "not-authorized", stream.dump()
    assert_server_still_serves(server)


def test_scram_plus_with_unoffered_binding_type_refused(server):
    """A binding type the server did not advertise (tls-unique) does not log in."""
    stream, _ = encrypted_stream(server, "starttls")
    with stream:
        data = stream.ssl_object.get_channel_binding("tls-unique") or b""
        scram = ScramClient("SCRAM-SHA-256-PLUS", "alice", PASSWORDS["alice"], cb_type="tls-unique", cb_data=data)
        outcome = stream.auth_scram(scram, "SCRAM-SHA-256-PLUS")
        assert not outcome.success, stream.dump()


def test_scram_downgrade_flag_refused(server):
    """RFC 5802 §6: a client saying "y" (I could bind, but think you cannot)
    to a server that advertised -PLUS reveals a downgrade; login fails."""
    stream, _ = encrypted_stream(server, "starttls")
    with stream:
        scram = ScramClient("SCRAM-SHA-256", "alice", PASSWORDS["alice"], cb_flag="y")
        outcome = stream.auth_scram(scram, "SCRAM-SHA-256")
        assert not outcome.success, stream.dump()


def test_scram_without_binding_on_plus_server_accepted(server):
    """The "n" flag (client does not do channel binding) with plain SCRAM is
    fine even where -PLUS is offered: older clients still log in."""
    stream, _ = encrypted_stream(server, "direct_tls")
    with stream:
        scram = ScramClient("SCRAM-SHA-1", "alice", PASSWORDS["alice"])
        outcome = stream.auth_scram(scram, "SCRAM-SHA-1")
        assert outcome.success, stream.dump()


def test_failed_attempt_can_be_retried_on_same_stream(server):
    """RFC 6120 §6.4.5: after a wrong password the user may try again on the
    same stream, and the right password then works."""
    stream, _ = encrypted_stream(server, "starttls")
    with stream:
        first = stream.auth_plain("alice", "typo-password")
        assert not first.success and first.condition == "not-authorized", stream.dump()
        second = stream.auth_plain("alice", PASSWORDS["alice"])
        assert second.success, stream.dump()
        assert stream.bind("retry").startswith("alice@localhost/")
