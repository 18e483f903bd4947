"""The export format, and the command line's answers to bad input it finds before it
opens any database (in process: these never reach a server)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tmcp_storage_server.__main__ import main
from tmcp_storage_server.admin import dump
from tmcp_storage_server.admin.cli import size
from tmcp_storage_server.model import Entry, Space

NOW = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def _entry(key: str, value: bytes, content_type: str, **more: object) -> Entry:
    fields: dict[str, object] = {
        "create_revision": 1,
        "mod_revision": 1,
        "created_at": NOW,
        "updated_at": NOW,
        "expires_at": None,
        "size": len(value),
        "checksum": "",
        **more,
    }
    return Entry(key, value, content_type, 3, **fields)  # type: ignore[arg-type]


def test_entries_read_back_as_the_puts_that_rebuild_them() -> None:
    entries = [
        _entry("j", b'{"a":[1,2.5,"\xc3\xbc"]}', "application/json", metadata={"m": "1"}),
        _entry("p", b'{ "a": 1 }', "application/json"),
        _entry("r", bytes(range(256)), "image/png", expires_at=NOW),
    ]
    out = io.StringIO()
    dump.write_line(out, dump.header(Space("demo", "alice"), 7, NOW))
    for entry in entries:
        dump.write_line(out, dump.entry_line(entry))
    lines = out.getvalue().splitlines()
    assert json.loads(lines[1])["json"] == {"a": [1, 2.5, "ü"]}
    assert "base64" in json.loads(lines[2])  # not compact: its bytes are kept
    assert json.loads(lines[3])["expires_at"] == "2026-01-02T03:04:05.123456Z"

    loaded = dump.read(iter(lines))

    assert loaded.space == Space("demo", "alice") and loaded.lines == [2, 3, 4]
    assert [(c.key, c.value, c.is_json) for c in loaded.commands] == [
        (e.key, e.value, e.key == "j") for e in entries
    ]
    assert [c.expires_at for c in loaded.commands] == [None, None, NOW]
    assert loaded.commands[0].metadata == {"m": "1"}
    raw = dump.entry_line(entries[0], raw=True)
    assert "json" not in raw and "base64" in raw


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "line 1: not a JSON object"),
        ('{"key": "a"}', "exactly one of json and base64"),
        ('{"key": "a", "base64": "***"}', "not valid base64"),
        ('{"key": "a", "json": 1, "base64": ""}', "exactly one of"),
        ('{"key": "a", "json": NaN}', "JSON cannot store"),
        ('{"key": "a", "json": 1, "expires_at": "soon"}', "not an RFC 3339 time"),
        ('{"key": "a", "json": 1, "expires_at": "2026-01-01T00:00:00"}', "no time zone"),
        ('{"key": "a", "json": 1, "metadata": {"n": 1}}', "metadata must be"),
        ('{"key": 5, "json": 1}', "key must be a string"),
        ('{"key": "a", "json": 1}\n{"format": "tmcp-storage-export/1"}', "line 2: expected"),
        ('{"format": "other/1", "space": {}}', "header first"),
    ],
)
def test_a_malformed_file_names_its_line(text: str, message: str) -> None:
    with pytest.raises(dump.BadFile) as caught:
        dump.read(iter(text.splitlines()))
    assert message in str(caught.value)


def test_sizes_take_binary_units() -> None:
    assert [size(s) for s in ("1000", "512KiB", "10 MiB", "1gib", "7B")] == [
        1000,
        512 * 1024,
        10 * 1024**2,
        1024**3,
        7,
    ]


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings of an embedded database in a scratch directory (never opened here)."""
    monkeypatch.setenv("STORAGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STORAGE_DATABASE_URL", "sqlite:///" + str(tmp_path / "storage.db"))
    monkeypatch.setenv("STORAGE_JWT_SECRET", "unit-secret")
    return tmp_path


def test_bad_files_and_arguments_exit_2_before_any_database_work(
    embedded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_json = embedded / "bad.jsonl"
    not_json.write_text('{"key": "a", "base64": ""}\nnot json\n')
    no_header = embedded / "plain.jsonl"
    no_header.write_text('{"key": "a", "base64": ""}\n')
    cases = [
        (["import", str(embedded / "missing.jsonl"), "--app", "a"], "missing.jsonl (BAD_FILE)"),
        (["import", str(not_json), "--app", "a"], "line 2: not a JSON document"),
        (["import", str(no_header)], "name the target with --app"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert main(["import", str(no_header), "--json"]) == 2
    error = json.loads(capsys.readouterr().err)["error"]
    assert error["reason"] == "INVALID_ARGUMENT"
    with pytest.raises(SystemExit) as caught:
        main(["set-quota", "--app", "a", "--bytes", "lots"])
    assert caught.value.code == 2
    assert "not a size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inspect", "--app", "a", "--keys", "-1"])
    assert "not a non-negative integer" in capsys.readouterr().err
    assert not (embedded / "storage.db").exists()
