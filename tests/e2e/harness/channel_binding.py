"""TLS channel-binding data for SCRAM-*-PLUS, computed on the client side.

Jackdaw offers two channel-binding types (advertised per XEP-0440):

* ``tls-exporter`` (RFC 9266): 32 bytes of RFC 5705 keying material exported
  with the label ``EXPORTER-Channel-Binding`` and no context.
* ``tls-server-end-point`` (RFC 5929 §4): a hash of the server's certificate,
  with the certificate's own signature hash (SHA-256 when that is MD5/SHA-1).

Python's ``ssl`` module (3.11 here, and still in 3.13) offers only
``tls-unique``, which RFC 9266 forbids on TLS 1.3 and which Jackdaw does not
offer (CPython issue 95341). slixmpp therefore cannot compute ``tls-exporter``
itself: on TLS 1.3 its SCRAM-PLUS cancels for lack of binding data. We compute
the exporter here by calling OpenSSL's ``SSL_export_keying_material`` through
ctypes on the ``SSL*`` that CPython's ``_ssl`` module wraps. That reads a
private CPython struct, so :func:`tls_exporter` checks that the pointer it
found really is this connection's ``SSL`` (same protocol version, same
Finished message) before trusting it, and raises
:class:`ChannelBindingUnavailable` otherwise; tests then skip with that reason
instead of failing for a harness problem.
"""

from __future__ import annotations

import _ssl
import ctypes
import ctypes.util
import hashlib
import ssl

TLS_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
TLS_EXPORTER_LENGTH = 32

_PROTOCOL_VERSIONS = {
    "TLSv1": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}

# Signature algorithm OIDs (RFC 5754, RFC 5758) and the hash each one uses.
_SIGNATURE_HASHES = {
    "1.2.840.113549.1.1.4": "md5",  # md5WithRSAEncryption
    "1.2.840.113549.1.1.5": "sha1",  # sha1WithRSAEncryption
    "1.2.840.113549.1.1.11": "sha256",  # sha256WithRSAEncryption
    "1.2.840.113549.1.1.12": "sha384",  # sha384WithRSAEncryption
    "1.2.840.113549.1.1.13": "sha512",  # sha512WithRSAEncryption
    "1.2.840.10045.4.1": "sha1",  # ecdsa-with-SHA1
    "1.2.840.10045.4.3.2": "sha256",  # ecdsa-with-SHA256
    "1.2.840.10045.4.3.3": "sha384",  # ecdsa-with-SHA384
    "1.2.840.10045.4.3.4": "sha512",  # ecdsa-with-SHA512
}


class ChannelBindingUnavailable(Exception):
    """The binding data cannot be computed on this client (not a server fault)."""


class ChannelBindingUndefined(Exception):
    """RFC 5929 defines no tls-server-end-point for this certificate's algorithm."""


def compute(binding_type: str, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes:
    """The channel-binding data of ``binding_type`` for this TLS connection."""
    if binding_type == "tls-exporter":
        return tls_exporter(ssl_object)
    if binding_type == "tls-server-end-point":
        return tls_server_end_point(ssl_object)
    if binding_type == "tls-unique":
        data = ssl_object.get_channel_binding("tls-unique")
        if data is None:
            raise ChannelBindingUnavailable("tls-unique is not available")
        return data
    raise ValueError(f"unknown channel-binding type {binding_type!r}")


# --- tls-server-end-point -------------------------------------------------


def tls_server_end_point(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes:
    """RFC 5929 §4.1: the hash of the server's DER certificate."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise ChannelBindingUnavailable("the server sent no certificate")
    oid = certificate_signature_oid(der)
    hash_name = _SIGNATURE_HASHES.get(oid)
    if hash_name is None:
        raise ChannelBindingUndefined(
            f"certificate signature algorithm {oid} has no single hash, so "
            "RFC 5929 does not define tls-server-end-point for it"
        )
    if hash_name in ("md5", "sha1"):
        hash_name = "sha256"
    return hashlib.new(hash_name, der).digest()


def certificate_signature_oid(der: bytes) -> str:
    """The dotted OID of an X.509 certificate's signatureAlgorithm."""
    # Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    tag, body, _ = _der_element(der, 0)
    assert tag == 0x30, "certificate is not a DER SEQUENCE"
    _, _, after_tbs = _der_element(body, 0)
    tag, algorithm, _ = _der_element(body, after_tbs)
    assert tag == 0x30, "signatureAlgorithm is not a SEQUENCE"
    tag, oid, _ = _der_element(algorithm, 0)
    assert tag == 0x06, "signatureAlgorithm does not start with an OID"
    return _decode_oid(oid)


def _der_element(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, contents, offset after the element) of the DER element at offset."""
    tag = data[offset]
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    return tag, data[offset : offset + length], offset + length


def _decode_oid(raw: bytes) -> str:
    parts = [raw[0] // 40, raw[0] % 40]
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(part) for part in parts)


# --- tls-exporter ----------------------------------------------------------


def _load_libssl() -> ctypes.CDLL:
    # dlsym on the _ssl extension's handle also searches the libssl it links,
    # so this finds the very library CPython uses for the connection.
    candidates = [_ssl.__file__, ctypes.util.find_library("ssl")]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            lib = ctypes.CDLL(candidate)
            lib.SSL_export_keying_material  # noqa: B018 - probe the symbol
            return lib
        except (OSError, AttributeError):
            continue
    raise ChannelBindingUnavailable("cannot find OpenSSL's libssl for _ssl")


def _ssl_pointer(ssl_object: ssl.SSLObject | ssl.SSLSocket, libssl: ctypes.CDLL) -> int:
    """The ``SSL*`` inside CPython's ``_ssl._SSLSocket`` (Modules/_ssl.c).

    ``PySSLSocket`` is ``{PyObject_HEAD; PyObject *Socket; SSL *ssl; ...}``:
    the pointer sits three machine words into the object (two words of
    ``PyObject_HEAD`` in a release build, then ``Socket``).
    """
    inner = getattr(ssl_object, "_sslobj", None)
    if inner is None:
        raise ChannelBindingUnavailable("no _sslobj on this ssl object")
    word = ctypes.sizeof(ctypes.c_void_p)
    pointer = ctypes.c_void_p.from_address(id(inner) + 3 * word).value
    if not pointer:
        raise ChannelBindingUnavailable("no SSL* where CPython keeps it")

    libssl.SSL_version.argtypes = [ctypes.c_void_p]
    libssl.SSL_version.restype = ctypes.c_int
    expected_version = _PROTOCOL_VERSIONS.get(ssl_object.version() or "")
    if libssl.SSL_version(pointer) != expected_version:
        raise ChannelBindingUnavailable("SSL* does not match this connection's version")

    # Stronger check: our Finished message, as CPython reports it for tls-unique.
    libssl.SSL_get_finished.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    libssl.SSL_get_finished.restype = ctypes.c_size_t
    try:
        python_finished = ssl_object.get_channel_binding("tls-unique")
    except (ValueError, ssl.SSLError):
        python_finished = None
    if python_finished:
        buffer = ctypes.create_string_buffer(128)
        size = libssl.SSL_get_finished(pointer, buffer, len(buffer))
        if buffer.raw[:size] != python_finished:
            raise ChannelBindingUnavailable("SSL* does not match this connection's Finished")
    return pointer


def tls_exporter(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes:
    """RFC 9266: 32 bytes exported with label EXPORTER-Channel-Binding, no context."""
    libssl = _load_libssl()
    pointer = _ssl_pointer(ssl_object, libssl)
    export = libssl.SSL_export_keying_material
    export.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_int,
    ]
    export.restype = ctypes.c_int
    out = ctypes.create_string_buffer(TLS_EXPORTER_LENGTH)
    ok = export(
        pointer,
        out,
        TLS_EXPORTER_LENGTH,
        TLS_EXPORTER_LABEL,
        len(TLS_EXPORTER_LABEL),
        None,
        0,
        0,  # use_context = 0: RFC 9266 uses no context value
    )
    if ok != 1:
        raise ChannelBindingUnavailable("SSL_export_keying_material failed")
    return out.raw
