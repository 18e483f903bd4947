"""``model.record``: value classes, frozen to the type checker, cheap to build."""

from __future__ import annotations

import dataclasses

from tmcp_storage_server.model import Change, ChangeOp, Space


def test_records_are_equal_and_hashable_by_value() -> None:
    assert Space("app", "u1") == Space("app", "u1") != Space("app", "u2")
    assert len({Space("app", "u1"), Space("app", "u1"), Space("app", "")}) == 2
    change = Change(3, "k", ChangeOp.PUT, 1)
    assert hash(change) == hash(Change(3, "k", ChangeOp.PUT, 1))
    assert dataclasses.replace(change, version=2) == Change(3, "k", ChangeOp.PUT, 2)
    assert not hasattr(change, "__dict__")  # slots


def test_assigning_a_field_is_a_type_error() -> None:
    space = Space("app", "u1")
    # mypy --strict (make lint) reports an unused ignore if records stop being frozen
    # to the type checker.
    space.user_id = "u2"  # type: ignore[misc]
    assert space.user_id == "u2"  # not enforced at run time: see model.record
