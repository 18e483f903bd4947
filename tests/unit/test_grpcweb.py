"""The gRPC-Web wire format, header translation and CORS of the gateway, in isolation."""

from __future__ import annotations

import base64
import contextlib

import pytest
from google.rpc import error_details_pb2, status_pb2
from tmcp_storage_server.api import gateway_http as http
from tmcp_storage_server.api import grpcweb
from tmcp_storage_server.api.gateway import upstream_target
from tmcp_storage_server.api.gateway_upstream import Upstream
from tmcp_storage_server.config import Config, ConfigError
from tmcp_storage_server.errors import InvalidArgument


def test_frames_round_trip() -> None:
    body = (
        grpcweb.encode_frame(b"abc")
        + grpcweb.encode_frame(b"")
        + grpcweb.encode_frame(b"k: v\r\n", grpcweb.TRAILER)
    )
    assert body[:5] == b"\x00\x00\x00\x00\x03"
    frames = grpcweb.decode_frames(body)
    assert [(f.flags, f.payload) for f in frames] == [(0, b"abc"), (0, b""), (0x80, b"k: v\r\n")]
    assert [f.is_trailer for f in frames] == [False, False, True]
    assert grpcweb.decode_frames(b"") == []


@pytest.mark.parametrize("body", [b"\x00\x00\x00", b"\x00\x00\x00\x00\x05abc"])
def test_truncated_frames_are_errors(body: bytes) -> None:
    with pytest.raises(grpcweb.ProtocolError, match=r"truncated|declares"):
        grpcweb.decode_frames(body)


def test_large_frame_length() -> None:
    payload = bytes(range(256)) * 300
    assert grpcweb.decode_frames(grpcweb.encode_frame(payload))[0].payload == payload


def test_text_bodies_may_be_concatenated_padded_runs() -> None:
    data = grpcweb.encode_frame(b"hello world")
    chunks = [data[:4], data[4:5], data[5:]]
    text = b"".join(grpcweb.encode_text(c) for c in chunks)
    assert text.count(b"=") >= 2
    assert grpcweb.decode_text(text) == data
    assert grpcweb.decode_text(b" " + grpcweb.encode_text(data) + b"\r\n") == data
    assert grpcweb.decode_text(base64.b64encode(data).rstrip(b"=")) == data  # unpadded tail
    assert grpcweb.decode_text(b"") == b""


@pytest.mark.parametrize("text", [b"AA=A", b"A", b"AB*D", b"AAAA=", b"AAA==="])
def test_bad_base64_is_an_error(text: bytes) -> None:
    with pytest.raises(grpcweb.ProtocolError):
        grpcweb.decode_text(text)


def test_trailers_round_trip() -> None:
    frame = grpcweb.encode_trailers([("Grpc-Status", "5"), ("grpc-message", "a%20b")])
    [decoded] = grpcweb.decode_frames(frame)
    assert decoded.flags == grpcweb.TRAILER
    assert decoded.payload == b"grpc-status: 5\r\ngrpc-message: a%20b\r\n"
    assert grpcweb.decode_trailers(decoded.payload) == [
        ("grpc-status", "5"),
        ("grpc-message", "a%20b"),
    ]
    with pytest.raises(grpcweb.ProtocolError):
        grpcweb.decode_trailers(b"no colon\r\n")


def test_grpc_message_percent_encoding() -> None:
    assert grpcweb.percent_encode("key 'a b' not found") == "key 'a b' not found"
    assert grpcweb.percent_encode("100% é\n") == "100%25 %C3%A9%0A"
    for message in ("plain", "ключ ☃ 100%", "\t\r\n"):
        assert grpcweb.percent_decode(grpcweb.percent_encode(message)) == message


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1H", 3600.0),
        ("2M", 120.0),
        ("3S", 3.0),
        ("250m", 0.25),
        ("7u", 7e-6),
        ("99999999n", 0.099999999),
    ],
)
def test_timeouts(header: str, seconds: float) -> None:
    assert grpcweb.parse_timeout(header) == pytest.approx(seconds)


@pytest.mark.parametrize("header", ["", "5", "1s", "123456789S", "-1S", "1.5S", "S"])
def test_bad_timeouts(header: str) -> None:
    with pytest.raises(grpcweb.ProtocolError):
        grpcweb.parse_timeout(header)


def test_format_timeout() -> None:
    assert grpcweb.format_timeout(0.25) == "250m"
    assert grpcweb.parse_timeout(grpcweb.format_timeout(0.0001)) == pytest.approx(0.001)


def test_request_metadata_keeps_end_to_end_headers_only() -> None:
    headers = [
        ("Authorization", "Bearer t"),
        ("X-Request-Id", " r1 "),
        ("X-Trace-Bin", "AQID"),
        ("X-Trace-Bin", "BA"),  # unpadded, as gRPC allows
        ("Content-Type", "application/grpc-web"),
        ("Host", "h"),
        ("Connection", "keep-alive"),
        ("Origin", "http://a"),
        ("Sec-Fetch-Mode", "cors"),
        ("grpc-timeout", "1S"),
        ("X-Grpc-Web", "1"),
        ("Cookie", "s=1"),
        ("Weird Name", "x"),
    ]
    assert http.request_metadata(headers) == [
        ("authorization", "Bearer t"),
        ("x-request-id", "r1"),
        ("x-trace-bin", b"\x01\x02\x03"),
        ("x-trace-bin", b"\x04"),
    ]


@pytest.mark.parametrize("header", [("x-trace-bin", "!!"), ("x-name", "é")])
def test_metadata_gRPC_cannot_carry_is_invalid(header: tuple[str, str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        http.request_metadata([header])
    assert caught.value.reason == "INVALID_METADATA"


def test_status_trailers() -> None:
    trailers = http.status_trailers(
        5, "key 'é' not found", [("grpc-status-details-bin", b"\x01"), ("x", "y")]
    )
    assert trailers == [
        ("grpc-status", "5"),
        ("grpc-message", "key '%C3%A9' not found"),
        ("grpc-status-details-bin", "AQ=="),
        ("x", "y"),
    ]
    assert http.status_trailers(0, "", []) == [("grpc-status", "0")]


def test_gateway_statuses_carry_error_info() -> None:
    status = http.invalid("body", "bad", "MALFORMED_GRPC_WEB")
    trailers = dict(http.rich_trailers(status))
    assert trailers["grpc-status"] == "3"
    decoded = status_pb2.Status.FromString(base64.b64decode(trailers["grpc-status-details-bin"]))
    info = error_details_pb2.ErrorInfo()
    assert decoded.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("MALFORMED_GRPC_WEB", "storage.tmcp")
    assert http.unimplemented("no", "STREAMING_NOT_SUPPORTED").code == 12


def test_cors() -> None:
    cors = http.Cors(("http://a.test", "https://b.test:8443"))
    assert cors.allows("http://a.test") and not cors.allows("http://a.test:80")
    assert cors.response_headers(None) == {}
    assert cors.response_headers("http://evil.test") == {}
    headers = cors.response_headers("https://b.test:8443")
    assert headers["Access-Control-Allow-Origin"] == "https://b.test:8443"
    assert "grpc-status-details-bin" in headers["Access-Control-Expose-Headers"]
    preflight = cors.preflight_headers(
        "http://a.test", {"Access-Control-Request-Headers": "authorization, x-custom"}
    )
    assert preflight["Access-Control-Allow-Headers"] == "authorization, x-custom"
    assert "POST" in preflight["Access-Control-Allow-Methods"]
    assert http.Cors(("*",)).allows("http://anything.test")


def test_config() -> None:
    assert Config.from_env({}).web_listen == ""
    config = Config.from_env(
        {
            "STORAGE_WEB_LISTEN": "127.0.0.1:8080",
            "STORAGE_WEB_ORIGINS": "http://localhost:8080, https://App.test,http://[::1]:3000",
        }
    )
    assert config.web_listen == "127.0.0.1:8080"
    assert config.web_origins == ("http://localhost:8080", "https://app.test", "http://[::1]:3000")
    for bad in ({"STORAGE_WEB_LISTEN": "8080"}, {"STORAGE_WEB_ORIGINS": "http://a.test/"}):
        with pytest.raises(ConfigError):
            Config.from_env(bad)
    with pytest.raises(ConfigError):
        Config.from_env({"STORAGE_WEB_ORIGINS": "a.test"})


def test_upstream_target() -> None:
    assert upstream_target("127.0.0.1:0", 5001) == "127.0.0.1:5001"
    assert upstream_target("0.0.0.0:50051", 50051) == "127.0.0.1:50051"
    assert upstream_target("[::]:50051", 50051) == "[::1]:50051"
    assert upstream_target("localhost:1", 1) == "localhost:1"


def test_forwarded_for() -> None:
    metadata: http.Metadata = [("authorization", "t"), ("x-forwarded-for", "10.0.0.1")]
    assert http.forwarded_for(metadata, "127.0.0.1") == [
        ("authorization", "t"),
        ("x-forwarded-for", "10.0.0.1, 127.0.0.1"),
    ]
    assert http.forwarded_for([], "::1") == [("x-forwarded-for", "::1")]
    assert http.forwarded_for([("a", "b")], None) == [("a", "b")]


async def test_upstream_opens_a_channel_per_full_connection() -> None:
    upstream = Upstream(
        target="127.0.0.1:1", credentials=None, max_message_bytes=1024, per_channel=2
    )
    with contextlib.ExitStack() as calls:
        leased = [calls.enter_context(upstream.lease()) for _ in range(5)]
        assert upstream.channels == 3
        assert leased[0] is leased[1] and leased[2] is leased[3] and leased[4] is not leased[0]
    with upstream.lease() as again:  # freed slots are reused before opening more
        assert again in leased
    assert upstream.channels == 3
    await upstream.close()
    assert upstream.channels == 0
    with pytest.raises(ValueError, match="per_channel"):
        Upstream(target="x:1", credentials=None, max_message_bytes=1, per_channel=0)
