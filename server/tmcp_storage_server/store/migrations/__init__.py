"""Schema migrations, one folder per database, applied in file-name order."""

from __future__ import annotations

from importlib import resources


def scripts(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration of ``dialect``, in order."""
    folder = resources.files(__name__).joinpath(dialect)
    found = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            version = int(item.name.split("_", 1)[0])
            found.append((version, item.name, item.read_text()))
    return sorted(found)


def statements(sql: str) -> list[str]:
    """The statements of a script (they end with ';' at a line end; no bodies)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]
