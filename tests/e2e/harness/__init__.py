"""Helpers for Jackdaw's end-to-end tests.

* :mod:`harness.server`: start the built ``jackdaw`` binary with a temporary
  config and ``data_path``, add users through its CLI, restart and stop it.
* :mod:`harness.client`: a slixmpp client (a real third-party XMPP client)
  logged in to that server, with an inbox of received stanzas to await.
* :mod:`harness.raw`: a blocking socket speaking raw XML, for input no decent
  client would send.
* :mod:`harness.scram`: a small SCRAM client (RFC 5802) for the raw socket.
* :mod:`harness.channel_binding`: tls-exporter and tls-server-end-point data.
"""

DOMAIN = "localhost"

#: The accounts most tests use; the ``server`` fixture creates them.
PASSWORDS = {
    "alice": "alice-Secret-1",
    "bob": "bob-Secret-2",
    "carol": "carol-Secret-3",
}


def jid_of(user: str) -> str:
    return f"{user}@{DOMAIN}"
