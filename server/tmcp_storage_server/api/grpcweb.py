"""The gRPC-Web wire format, as pure functions: frames, text bodies, trailers, timeouts.

A gRPC-Web body is a sequence of frames: one flags byte, a 4-byte big-endian length, the
payload. Flags ``0x00`` is a message, ``0x80`` the trailers (HTTP/1-style ``name: value``
lines), bit ``0x01`` a compressed message. ``application/grpc-web-text`` carries the same
bytes in base64, and a sender may base64 each chunk on its own, so a body can be several
padded base64 runs back to back. Everything here raises ``ProtocolError`` on bad input.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

DATA = 0x00
TRAILER = 0x80
COMPRESSED = 0x01
HEADER = struct.Struct(">BI")

BINARY_TYPES = ("application/grpc-web", "application/grpc-web+proto")
TEXT_TYPES = ("application/grpc-web-text", "application/grpc-web-text+proto")

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = re.compile(rb"[ \t\r\n]+")
_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# gRPC's percent-encoding of grpc-message: printable ASCII except '%' stays as is.
_UNRESERVED = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class ProtocolError(ValueError):
    """A gRPC-Web body or header is malformed; the message says how."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One gRPC-Web frame."""

    flags: int
    payload: bytes

    @property
    def is_trailer(self) -> bool:
        """Whether this is the trailer frame."""
        return bool(self.flags & TRAILER)


def encode_frame(payload: bytes, flags: int = DATA) -> bytes:
    """One frame around ``payload``."""
    return HEADER.pack(flags, len(payload)) + payload


def decode_frames(body: bytes) -> list[Frame]:
    """Every frame of a (binary) body; a truncated frame is an error."""
    frames: list[Frame] = []
    view = memoryview(body)
    offset = 0
    while offset < len(view):
        if len(view) - offset < HEADER.size:
            raise ProtocolError(f"truncated frame header at byte {offset}")
        flags, length = HEADER.unpack_from(view, offset)
        start = offset + HEADER.size
        if len(view) - start < length:
            raise ProtocolError(
                f"frame at byte {offset} declares {length} bytes, {len(view) - start} follow"
            )
        frames.append(Frame(flags, bytes(view[start : start + length])))
        offset = start + length
    return frames


def decode_text(body: bytes) -> bytes:
    """The bytes of a base64 (``grpc-web-text``) body, which may be several padded
    base64 runs back to back; whitespace is ignored."""
    text = _WHITESPACE.sub(b"", body)
    out = bytearray()
    position = 0
    while position < len(text):
        run = _BASE64_RUN.match(text, position)
        if run is None or run.end() == position:
            raise ProtocolError(f"invalid base64 at character {position}")
        chunk = run.group()
        if chunk.endswith(b"=") and len(chunk) % 4:
            raise ProtocolError(f"misplaced base64 padding before character {run.end()}")
        if len(chunk) % 4 == 1:
            raise ProtocolError("truncated base64")
        try:
            out += base64.b64decode(chunk + b"=" * (-len(chunk) % 4), validate=True)
        except binascii.Error as exc:
            raise ProtocolError(f"invalid base64: {exc}") from None
        position = run.end()
    return bytes(out)


def encode_text(data: bytes) -> bytes:
    """``data`` as one padded base64 run (a ``grpc-web-text`` chunk)."""
    return base64.b64encode(data)


def encode_trailers(pairs: Iterable[tuple[str, str]]) -> bytes:
    """The trailer frame carrying ``pairs`` (names lower-cased)."""
    block = "".join(f"{name.lower()}: {value}\r\n" for name, value in pairs)
    return encode_frame(block.encode("ascii"), TRAILER)


def decode_trailers(payload: bytes) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a trailer frame's payload."""
    pairs: list[tuple[str, str]] = []
    for line in payload.decode("ascii", errors="replace").split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"trailer line without a colon: {line!r}")
        pairs.append((name.strip().lower(), value.strip()))
    return pairs


def percent_encode(message: str) -> str:
    """``grpc-message`` encoding: UTF-8, then every byte outside printable ASCII (and
    ``%``) as ``%XX``."""
    return quote(message, safe=_UNRESERVED, encoding="utf-8")


def percent_decode(text: str) -> str:
    """The inverse of ``percent_encode`` (invalid UTF-8 is replaced, never an error)."""
    return unquote(text, encoding="utf-8", errors="replace")


def parse_timeout(value: str) -> float:
    """A ``grpc-timeout`` header (``1-8 digits`` + ``H M S m u n``) in seconds."""
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        raise ProtocolError(f"grpc-timeout {value!r} is not 1-8 digits and a unit (H M S m u n)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_timeout(seconds: float) -> str:
    """``seconds`` as a ``grpc-timeout`` header value (milliseconds, at least 1)."""
    return f"{max(1, min(99_999_999, round(seconds * 1000)))}m"
