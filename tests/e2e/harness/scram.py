"""A small SCRAM client (RFC 5802, RFC 7677) for the raw-socket tests.

slixmpp's own SCRAM always names ``tls-unique`` or ``tls-exporter`` in its GS2
header, so this one exists to try ``tls-server-end-point``, wrong binding data
and the ``y`` downgrade flag, which no well-behaved client library sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


class ScramError(AssertionError):
    """The server's SCRAM messages are wrong (bad nonce, bad signature)."""


class ScramClient:
    """One SCRAM exchange: ``client_first()``, ``client_final()``, ``verify_server_final()``.

    ``mechanism`` is e.g. ``"SCRAM-SHA-256-PLUS"``. ``cb_flag`` is the GS2
    channel-binding flag: ``"n"`` (client does not bind), ``"y"`` (client
    could but believes the server cannot) or ``"p=<type>"``; it defaults to
    ``p=<cb_type>`` for a -PLUS mechanism and ``n`` otherwise.
    """

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        cb_type: str | None = None,
        cb_data: bytes = b"",
        cb_flag: str | None = None,
    ) -> None:
        name = mechanism.upper()
        self.plus = name.endswith("-PLUS")
        hash_name = name.removeprefix("SCRAM-").removesuffix("-PLUS").replace("-", "").lower()
        self.hash_name = {"sha1": "sha1", "sha256": "sha256", "sha512": "sha512"}[hash_name]
        self.username = username
        self.password = password
        if cb_flag is None:
            cb_flag = f"p={cb_type}" if self.plus else "n"
        self.gs2_header = f"{cb_flag},,".encode()
        self.cb_data = cb_data
        self.client_nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.server_signature: bytes | None = None

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash_name).digest()

    def _hash(self, data: bytes) -> bytes:
        return hashlib.new(self.hash_name, data).digest()

    @property
    def client_first_bare(self) -> bytes:
        user = self.username.replace("=", "=3D").replace(",", "=2C")
        return f"n={user},r={self.client_nonce}".encode()

    def client_first(self) -> bytes:
        return self.gs2_header + self.client_first_bare

    def client_final(self, server_first: bytes) -> bytes:
        fields = dict(part.split(b"=", 1) for part in server_first.split(b","))
        nonce = fields[b"r"]
        if not nonce.startswith(self.client_nonce.encode()) or nonce == self.client_nonce.encode():
            raise ScramError(f"server nonce {nonce!r} does not extend ours")
        salt = base64.b64decode(fields[b"s"])
        iterations = int(fields[b"i"])
        salted = hashlib.pbkdf2_hmac(self.hash_name, self.password.encode(), salt, iterations)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = self._hash(client_key)
        channel_binding = base64.b64encode(self.gs2_header + self.cb_data)
        without_proof = b"c=" + channel_binding + b",r=" + nonce
        auth_message = self.client_first_bare + b"," + server_first + b"," + without_proof
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = self._hmac(salted, b"Server Key")
        self.server_signature = self._hmac(server_key, auth_message)
        return without_proof + b",p=" + base64.b64encode(proof)

    def verify_server_final(self, server_final: bytes) -> None:
        fields = dict(part.split(b"=", 1) for part in server_final.split(b","))
        if b"e" in fields:
            raise ScramError(f"server-final carries error {fields[b'e']!r}")
        if base64.b64decode(fields[b"v"]) != self.server_signature:
            raise ScramError("server signature does not verify: the server does not know the password")
