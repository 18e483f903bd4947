"""Fixtures shared by the unit tests of the core."""

from __future__ import annotations

import pytest

from tests.unit.fakes import FakeClock, FakeRepository


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()
