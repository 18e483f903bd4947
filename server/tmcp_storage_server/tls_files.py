"""Checks of the TLS files a configuration names, made at start so that a bad file stops
the server with a clear message instead of failing every handshake later.

The standard ``ssl`` module (OpenSSL) parses the files: certificates and keys that load
here are what gRPC's BoringSSL loads too (PEM, unencrypted keys).
"""

from __future__ import annotations

import ssl


def _no_password() -> bytes:
    # Called only for an encrypted key: answer with an empty password, which fails.
    return b""


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error)


def _certificates(name: str, path: str) -> str | None:
    """The problem with a file that must hold PEM certificates, or None."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except FileNotFoundError:
        return f"{name}: no such file {path!r}"
    except OSError as error:  # ssl.SSLError is an OSError
        if isinstance(error, ssl.SSLError):
            return f"{name}: {path!r} holds no PEM certificate ({_reason(error)})"
        return f"{name}: cannot read {path!r} ({error.strerror or error})"
    return None


def check(cert: str, key: str, client_ca: str) -> str | None:
    """The problem with a TLS configuration (paths, "" for unset), or None when it is off
    or its files load: the certificate chain, a key that matches it, the client CAs."""
    if not cert and not key:
        if client_ca:
            return "STORAGE_TLS_CLIENT_CA (mutual TLS) needs STORAGE_TLS_CERT and STORAGE_TLS_KEY"
        return None
    if not cert or not key:
        return "STORAGE_TLS_CERT and STORAGE_TLS_KEY must be set together"
    problem = _certificates("STORAGE_TLS_CERT", cert)
    if problem is not None:
        return problem
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except FileNotFoundError:
        return f"STORAGE_TLS_KEY: no such file {key!r}"
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            return f"STORAGE_TLS_KEY: {key!r} is not the key of the certificate in {cert!r}"
        return f"STORAGE_TLS_KEY: {key!r} is not an unencrypted PEM private key ({_reason(error)})"
    except OSError as error:
        return f"STORAGE_TLS_KEY: cannot read {key!r} ({error.strerror or error})"
    if client_ca:
        return _certificates("STORAGE_TLS_CLIENT_CA", client_ca)
    return None
