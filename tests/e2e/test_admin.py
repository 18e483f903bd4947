"""The admin command line against the real server's database, checked through the server
with the Python client, on both backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tmcp_storage import Client, Mutation, QuotaExceeded, Space, Strategy

from tests.e2e import cli
from tests.e2e.conftest import ClientFactory
from tests.e2e.harness import ServerProcess


def _snapshot(client: Client, space: Space) -> dict[str, tuple[Any, ...]]:
    return {
        e.key: (e.value, e.content_type, e.metadata, e.expires_at, e.size, e.checksum)
        for e in client.list(include_values=True, space=space)
    }


def _write_export(path: Path, space: Space | None, *entries: dict[str, Any]) -> Path:
    lines = []
    if space is not None:
        head = {"app_id": space.app_id, "user_id": space.user_id}
        lines.append({"format": "tmcp-storage-export/1", "space": head, "revision": 0})
    path.write_text("".join(json.dumps(line) + "\n" for line in [*lines, *entries]))
    return path


def test_export_then_import_gives_an_equal_space(
    server: ServerProcess, alice: Client, connect: ClientFactory, app_id: str, tmp_path: Path
) -> None:
    expiry = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=123456)
    alice.put("json", {"name": "Ann", "tags": ["a", "ü"], "n": 1.5, "none": None})
    alice.put("raw", bytes(range(256)), content_type="image/png", metadata={"w": "16"})
    alice.put("pretty", b'{ "spaced" : true }', content_type="application/json")
    alice.put(
        "text",
        "hé".encode(),
        content_type="text/plain; charset=utf-8",
        expires_at=expiry,
        metadata={"a": "1", "b": "2"},
    )
    alice.put("ttl", {"x": 1}, ttl=3600)
    alice.put("gone", b"x")
    alice.delete("gone")
    path = tmp_path / "alice.jsonl"

    exported = cli.ok_json(server, "export", "--app", app_id, "--user", "alice", "-o", str(path))

    assert exported["entries"] == 5
    head, *lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert head["space"] == {"app_id": app_id, "user_id": "alice"}
    by_key = {line["key"]: line for line in lines}
    assert by_key["json"]["json"] == {"name": "Ann", "tags": ["a", "ü"], "n": 1.5, "none": None}
    assert "base64" in by_key["pretty"]  # JSON not in compact form keeps its bytes
    assert by_key["text"]["expires_at"] == expiry.isoformat().replace("+00:00", "Z")
    imported = cli.ok_json(server, "import", str(path), "--user", "copy")
    assert (imported["written"], imported["skipped_expired"]) == (5, 0)
    admin = connect(app_id, "backend", "storage:admin")
    original = _snapshot(admin, Space(app_id, "alice"))
    assert _snapshot(admin, Space(app_id, "copy")) == original
    assert original["text"][3] == expiry
    again = tmp_path / "copy.jsonl"
    cli.ok(server, "export", "--app", app_id, "--user", "copy", "-o", str(again))
    assert [json.loads(line) for line in again.read_text().splitlines()][1:] == lines


def test_an_import_is_one_revision_through_the_write_path(
    server: ServerProcess, alice: Client, app_id: str
) -> None:
    alice.put("a", b"1")
    alice.put("b", {"v": 1})
    exported = cli.ok(server, "export", "--app", app_id, "--user", "alice")
    cursor = alice.pull().cursor
    alice.put("c", b"not in the export")

    done = json.loads(cli.ok(server, "import", "-", "--replace", "--json", stdin=exported))

    assert (done["written"], done["deleted"]) == (2, 1)
    changes = alice.pull(cursor).changes
    assert {(c.key, c.op, c.version) for c in changes} == {
        ("a", "put", 2),
        ("b", "put", 2),
        ("c", "delete", 2),
    }
    assert len({c.revision for c in changes}) == 1
    assert alice.get("a", strong=True).value == b"1"
    assert alice.quota().used_keys == 2


def test_an_import_respects_quota_and_writes_nothing_when_over(
    server: ServerProcess, connect: ClientFactory, app_id: str, tmp_path: Path
) -> None:
    bob = Space(app_id, "bob")
    cli.ok(server, "set-quota", "--app", app_id, "--user", "bob", "--keys", "2")
    entries = [{"key": k, "base64": "aGk="} for k in ("a", "b", "c")]
    path = _write_export(tmp_path / "three.jsonl", bob, *entries)

    over = cli.run(server, "import", str(path))

    assert over.returncode == 1, over.stderr
    assert "QUOTA_KEYS" in over.stderr
    admin = connect(app_id, "backend", "storage:admin", space=bob)
    assert list(admin.list()) == []
    cli.ok(server, "set-quota", "--app", app_id, "--user", "bob", "--keys", "3", "--bytes", "5")
    assert "QUOTA_BYTES" in cli.run(server, "import", str(path)).stderr
    cli.ok(server, "set-quota", "--app", app_id, "--user", "bob", "--bytes", "1KiB")
    cli.ok(server, "set-quota", "--app", app_id, "--user", "bob", "--max-value", "1")
    too_big = cli.run(server, "import", str(path))
    assert too_big.returncode == 2
    assert "line 2" in too_big.stderr and "VALUE_TOO_LARGE" in too_big.stderr
    assert list(admin.list()) == []


def test_set_quota_then_a_write_over_it_fails_through_the_server(
    server: ServerProcess, alice: Client, app_id: str
) -> None:
    alice.put("a", b"12345")

    report = cli.ok_json(server, "set-quota", "--app", app_id, "--user", "alice", "--bytes", "8")

    assert report["overrides"]["limit_bytes"] == 8
    assert report["usage"]["used_bytes"] == 5
    with pytest.raises(QuotaExceeded) as caught:
        alice.put("b", b"1234")
    assert caught.value.reason == "QUOTA_BYTES"
    alice.put("b", b"123")
    cli.ok(server, "set-quota", "--app", app_id, "--user", "alice", "--reset")
    cli.ok(server, "set-quota", "--app", app_id, "--keys", "3")
    alice.put("c", b"x" * 100)
    with pytest.raises(QuotaExceeded) as caught:
        alice.put("d", b"x")
    assert caught.value.reason == "QUOTA_KEYS"


def test_inspect_shows_usage_limits_keys_and_open_conflicts(
    server: ServerProcess, alice: Client, app_id: str
) -> None:
    alice.put("doc", b"server")
    alice.put("doc", b"server2")
    mutation = Mutation(mutation_id=1, key="doc", value=b"client", base_version=1)
    assert alice.push("phone", [mutation], strategy=Strategy.MANUAL).outcomes[0].conflict_id
    alice.put("session", {"t": 1}, ttl=600)
    cli.ok(server, "set-quota", "--app", app_id, "--user", "alice", "--keys", "50")

    data = cli.ok_json(server, "inspect", "--app", app_id, "--user", "alice")

    keys = {k["key"]: k for k in data["keys"]}
    assert (keys["doc"]["version"], keys["doc"]["size"], keys["doc"]["expires_at"]) == (2, 7, None)
    assert keys["session"]["expires_at"] is not None
    assert data["usage"]["used_keys"] == 2 and data["usage"]["limit_keys"] == 50
    assert data["overrides"]["space"]["limit_keys"] == 50
    assert data["expiring"]["keys"] == 1
    assert data["open_conflicts"] == 1 and data["conflicts"][0]["key"] == "doc"
    text = cli.ok(server, "inspect", "--app", app_id, "--user", "alice")
    assert "doc  v2  7 B  application/octet-stream" in text
    assert "open conflicts: 1" in text and "limit_keys=50" in text


def test_app_usage_sums_the_spaces_of_an_app(
    server: ServerProcess, connect: ClientFactory, app_id: str
) -> None:
    connect(app_id, "alice").put("a", b"12")
    connect(app_id, "bob").put("b", b"1234")

    data = cli.ok_json(server, "app-usage", "--app", app_id)

    assert (data["spaces"], data["used_bytes"], data["used_keys"]) == (2, 6, 2)
    assert data["largest_spaces"][0]["space"] == {"app_id": app_id, "user_id": "bob"}
    assert f"app {app_id}: 2 spaces" in cli.ok(server, "app-usage", "--app", app_id)


def test_bad_input_gets_a_clear_error_and_exit_code(
    server: ServerProcess, alice: Client, app_id: str, tmp_path: Path
) -> None:
    alice.put("a", b"1")
    out = tmp_path / "nobody.jsonl"
    cases: list[tuple[list[str], int, str]] = [
        (["inspect", "--app", app_id, "--user", "nobody"], 3, "does not exist"),
        (["export", "--app", app_id, "--user", "nobody", "-o", str(out)], 3, "SPACE_NOT_FOUND"),
        (["app-usage", "--app", "app-none"], 3, "has no spaces"),
        (["set-quota", "--app", app_id, "--max-value", "0"], 2, "max_value_bytes"),
        (["inspect", "--app", "bad app!"], 2, "INVALID_SPACE"),
    ]
    for args, code, message in cases:
        done = cli.run(server, *args)
        assert (done.returncode, message in done.stderr) == (code, True), (args, done.stderr)
    assert list(tmp_path.iterdir()) == []  # a failed export leaves no file behind
    bad_key = _write_export(tmp_path / "key.jsonl", None, {"key": "a\tb", "base64": ""})
    done = cli.run(server, "import", str(bad_key), "--app", app_id, "--user", "alice", "--json")
    assert done.returncode == 2
    error = json.loads(done.stderr.splitlines()[-1])["error"]
    assert (error["reason"], error["message"].startswith("line 1:")) == ("INVALID_KEY", True)
    assert alice.get("a", strong=True).version == 1
