"""Deadlines while a write waits: on the space's row lock, and for a pooled database
connection. The call ends with DEADLINE_EXCEEDED, the server stops waiting, and nothing
of the call is stored, even once the lock and the connection come free.

PostgreSQL only: the lock is held from outside the server, by a separate connection
(``SELECT ... FOR UPDATE`` on the space's row), which the embedded database has no
equivalent of (its writes are serialized inside the one server process).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from tmcp_storage import Client, DeadlineExceeded, Space

from tests.e2e.harness import ServerProcess, token


@pytest.fixture(scope="module")
def one_connection(postgres_url: str) -> Iterator[ServerProcess]:
    """A server whose pool holds a single PostgreSQL connection."""
    process = ServerProcess(postgres_url, env={"STORAGE_DB_POOL_SIZE": "1"}).start()
    yield process
    process.stop()


def _client(server: ServerProcess, app: str, user: str) -> Client:
    return Client(server.target, token=token(app, user), space=Space(app, user), retries=0)


def test_a_write_waiting_past_its_deadline_stores_nothing(
    one_connection: ServerProcess, postgres_url: str
) -> None:
    app = "app-" + uuid.uuid4().hex[:12]
    with _client(one_connection, app, "alice") as alice, _client(one_connection, app, "bob") as bob:
        alice.put("k", b"old")
        bob.put("b", b"old")
        with psycopg.connect(postgres_url) as holder:
            holder.execute(
                "SELECT 1 FROM spaces WHERE app_id = %s AND user_id = 'alice' FOR UPDATE",
                (app,),
            )
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                alice.put("k", b"new", timeout=0.3)  # waits on the row lock
            assert time.monotonic() - started < 2

            # This one waits on the lock with the pool's only connection...
            slow: list[object] = []
            waiter = threading.Thread(
                target=lambda: slow.append(alice.put("k", b"patient", timeout=30))
            )
            waiter.start()
            time.sleep(0.5)
            # ...so this one waits for a connection, past its deadline.
            with pytest.raises(DeadlineExceeded):
                bob.put("b", b"new", timeout=0.3)
            holder.rollback()  # release the lock
        waiter.join(timeout=30)
        assert slow, "the patient write finished once the lock was released"
        time.sleep(0.5)  # anything still pending on the server would land by now
        k = alice.get("k", strong=True)
        assert (k.value, k.version) == (b"patient", 2)  # "new" never applied
        b = bob.get("b", strong=True)
        assert (b.value, b.version) == (b"old", 1)
        bob.put("b", b"later")  # the pool's connection was not lost with the call
        assert bob.get("b", strong=True).version == 2
