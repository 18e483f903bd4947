"""Database failures become domain errors here and nowhere else."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from tmcp_storage_server.errors import StorageError, Unavailable

log = logging.getLogger(__name__)


@contextmanager
def translate(*transient: type[BaseException]) -> Iterator[None]:
    """Re-raise ``transient`` driver errors as ``Unavailable`` (callers may retry)."""
    try:
        yield
    except StorageError:
        raise
    except transient as exc:
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        raise Unavailable() from exc
