"""Validation, access rules, page tokens and configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tmcp_storage_server.api.auth import TokenVerifier, mint_token
from tmcp_storage_server.config import Config, ConfigError
from tmcp_storage_server.core import validate
from tmcp_storage_server.core.access import Action, authorize, authorize_app
from tmcp_storage_server.core.pagination import PageToken
from tmcp_storage_server.errors import InvalidArgument, PermissionDenied, Unauthenticated
from tmcp_storage_server.model import ConflictStrategy, Principal, Scope, Space
from tmcp_storage_server.store.codec import pack_value, prefix_upper_bound, unpack_value

RW = frozenset({Scope.READ, Scope.WRITE})


@pytest.mark.parametrize(
    ("principal", "space", "action", "allowed"),
    [
        (Principal("u", "a", RW), Space("a", "u"), Action.WRITE, True),
        (Principal("u", "a", RW), Space("a", "v"), Action.READ, False),
        (Principal("u", "a", RW), Space("b", "u"), Action.READ, False),
        (Principal("u", "a", RW), Space("a", ""), Action.READ, True),
        (Principal("u", "a", RW), Space("a", ""), Action.WRITE, False),
        (Principal("", "a", RW), Space("a", ""), Action.WRITE, False),
        (Principal("u", "a", frozenset({Scope.READ})), Space("a", "u"), Action.WRITE, False),
        (Principal("s", "a", frozenset({Scope.ADMIN})), Space("a", "v"), Action.WRITE, True),
        (Principal("s", "a", frozenset({Scope.ADMIN})), Space("b", "v"), Action.READ, False),
        (Principal("o", "x", frozenset({Scope.OPERATOR})), Space("b", "v"), Action.ADMIN, True),
        (Principal("u", "a", RW), Space("a", "u"), Action.ADMIN, False),
        (Principal("u", "a", frozenset({Scope.READ})), Space("a", ""), Action.READ, True),
        (Principal("u", "a", frozenset({Scope.READ})), Space("a", "u"), Action.READ, True),
    ],
)
def test_authorize(principal: Principal, space: Space, action: Action, allowed: bool) -> None:
    if allowed:
        authorize(principal, space, action)
    else:
        with pytest.raises(PermissionDenied):
            authorize(principal, space, action)


@pytest.mark.parametrize(
    ("principal", "space", "action", "reason"),
    [
        (Principal("u", "a", RW), Space("b", "u"), Action.READ, "SPACE_FORBIDDEN"),
        (Principal("u", "a", RW), Space("a", "v"), Action.READ, "SPACE_FORBIDDEN"),
        (Principal("u", "a", RW), Space("a", ""), Action.WRITE, "SCOPE_MISSING"),
        (Principal("u", "a", RW), Space("a", "u"), Action.ADMIN, "SCOPE_MISSING"),
        (
            Principal("u", "a", frozenset({Scope.WRITE})),
            Space("a", "u"),
            Action.READ,
            "SCOPE_MISSING",
        ),
        (
            Principal("u", "a", frozenset({Scope.WRITE})),
            Space("a", ""),
            Action.READ,
            "SCOPE_MISSING",
        ),
        (Principal("", "a", RW), Space("a", "u"), Action.READ, "SPACE_FORBIDDEN"),
    ],
)
def test_authorize_says_why(
    principal: Principal, space: Space, action: Action, reason: str
) -> None:
    with pytest.raises(PermissionDenied) as caught:
        authorize(principal, space, action)
    assert caught.value.reason == reason


def test_authorize_app() -> None:
    authorize_app(Principal("s", "a", frozenset({Scope.ADMIN})), "a")
    with pytest.raises(PermissionDenied):
        authorize_app(Principal("s", "a", frozenset({Scope.ADMIN})), "b")
    with pytest.raises(PermissionDenied):
        authorize_app(Principal("u", "a", RW), "a")


@pytest.mark.parametrize("key", ["", "x" * 256, "a\x00", "tab\there", "é" * 128, "\ud800"])
def test_bad_keys(key: str) -> None:
    with pytest.raises(InvalidArgument):
        validate.key(key)


def test_expiry_rules() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert validate.expiry(now, ttl=timedelta(seconds=5), expires_at=None) == now + timedelta(
        seconds=5
    )
    assert validate.expiry(now, ttl=None, expires_at=None) is None
    for bad in (
        {"ttl": timedelta(0), "expires_at": None},
        {"ttl": None, "expires_at": now},
        {"ttl": timedelta(seconds=1), "expires_at": now + timedelta(days=1)},
    ):
        with pytest.raises(InvalidArgument):
            validate.expiry(now, **bad)


def test_page_token_round_trip_and_tampering() -> None:
    token = PageToken("p/", "p/9", 42)
    assert PageToken.decode(token.encode(), prefix="p/") == token
    with pytest.raises(InvalidArgument):
        PageToken.decode(token.encode(), prefix="q/")
    with pytest.raises(InvalidArgument):
        PageToken.decode(token.encode()[:-3], prefix="p/")


def test_prefix_upper_bound_is_tight() -> None:
    assert prefix_upper_bound("ab") == "ac"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\ud7ff") == "\ue000"
    assert prefix_upper_bound("\U0010ffff") is None


def test_compression_only_when_it_pays() -> None:
    small, codec = pack_value(b"x" * 1024)
    assert codec == 0 and small == b"x" * 1024
    packed, codec = pack_value(b"x" * 4096)
    assert codec == 1 and len(packed) < 100
    assert unpack_value(packed, codec) == b"x" * 4096
    random = bytes(range(256)) * 8
    assert pack_value(random)[1] in (0, 1)
    assert unpack_value(*pack_value(random)) == random


def test_token_verifier_caches_and_checks() -> None:
    verifier = TokenVerifier(secret="s" * 40)
    token = mint_token(
        "s" * 40, app_id="a", user_id="u", scopes=["storage:read", "bogus"], ttl_seconds=60
    )
    principal = verifier.authenticate([("authorization", f"Bearer {token}")])
    assert principal == Principal("u", "a", frozenset({Scope.READ}))
    assert verifier.authenticate([("authorization", f"Bearer {token}")]) is principal  # cached
    assert verifier.authenticate([("authorization", f"bearer  {token} ")]) == principal
    expired = mint_token("s" * 40, app_id="a", user_id="u", scopes=[], ttl_seconds=-60)
    with pytest.raises(Unauthenticated) as caught:
        verifier.authenticate([("authorization", f"Bearer {expired}")])
    assert caught.value.reason == "TOKEN_EXPIRED"


def test_token_verifier_cache_is_bounded_and_drops_the_oldest() -> None:
    verifier = TokenVerifier(secret="s" * 40, cache_size=2)
    tokens = [
        mint_token("s" * 40, app_id="a", user_id=f"u{i}", scopes=[], ttl_seconds=60)
        for i in range(3)
    ]
    first = [verifier.authenticate([("authorization", f"Bearer {t}")]) for t in tokens]
    assert [p.subject for p in first] == ["u0", "u1", "u2"]
    again = [verifier.authenticate([("authorization", f"Bearer {t}")]) for t in tokens[1:]]
    assert again[0] is first[1] and again[1] is first[2]  # cached: the same objects
    assert verifier.authenticate([("authorization", f"Bearer {tokens[0]}")]) is not first[0]


def test_a_space_validated_once_stays_valid_and_invalid_ones_are_never_remembered() -> None:
    good = Space("app", "user")
    assert validate.space(good) is good and validate.space(good) is good
    for _ in range(2):
        with pytest.raises(InvalidArgument) as caught:
            validate.space(Space("bad app", "u"), field="items")
        assert caught.value.field == "items.app_id"


def test_valid_content_types_are_remembered_and_invalid_ones_never() -> None:
    for _ in range(2):
        assert validate.content_type("text/plain; charset=utf-8", is_json=False) == (
            "text/plain; charset=utf-8"
        )
        with pytest.raises(InvalidArgument) as caught:
            validate.content_type("not a type", is_json=False, field="items.content_type")
        assert caught.value.reason == "INVALID_CONTENT_TYPE"
        assert caught.value.field == "items.content_type"
    # A JSON value takes only a JSON content type, whatever was remembered.
    validate.content_type("text/csv", is_json=False)
    with pytest.raises(InvalidArgument):
        validate.content_type("text/csv", is_json=True)


def test_config_defaults_and_validation() -> None:
    config = Config.from_env({})
    assert config.embedded
    assert config.sqlite_path == "./data/storage.db"
    assert config.listen == "127.0.0.1:50051"
    assert Config.from_env({"STORAGE_DATABASE_URL": "sqlite:////tmp/x.db"}).sqlite_path == (
        "/tmp/x.db"
    )
    flagged = Config.from_env({"STORAGE_LISTEN": "127.0.0.1:1"}, listen="127.0.0.1:2")
    assert flagged.listen == "127.0.0.1:2"
    for env in (
        {"STORAGE_LISTEN": "nope"},
        {"STORAGE_LIMIT_KEYS": "many"},
        {"STORAGE_DATABASE_URL": "postgresql://h/db"},
        {"STORAGE_MAX_VALUE_BYTES": "2000000"},
    ):
        with pytest.raises(ConfigError):
            Config.from_env(env)


def test_cache_and_worker_settings() -> None:
    embedded = Config.from_env({})
    assert (embedded.cache_bytes, embedded.cache_max_age, embedded.redis_prefix) == (
        64 * 1024 * 1024,
        2.0,
        "tmcp:",
    )
    assert embedded.workers == 1  # the embedded database takes one process
    pg = {"STORAGE_DATABASE_URL": "postgresql://h/db", "STORAGE_JWT_SECRET": "s"}
    assert Config.from_env(pg).workers >= 1
    assert Config.from_env(pg, workers="3").workers == 3
    tuned = Config.from_env(
        {
            **pg,
            "STORAGE_CACHE_BYTES": "0",
            "STORAGE_CACHE_MAX_AGE": "0.5",
            "STORAGE_REDIS_URL": "redis://127.0.0.1:6379/2",
            "STORAGE_REDIS_PREFIX": "x:",
        }
    )
    assert (tuned.cache_bytes, tuned.cache_max_age, tuned.redis_prefix) == (0, 0.5, "x:")
    for env in (
        {"STORAGE_REDIS_URL": "http://nope"},
        {"STORAGE_CACHE_BYTES": "-1"},
        {"STORAGE_CACHE_MAX_AGE": "0"},
        {"STORAGE_WORKERS": "0"},
    ):
        with pytest.raises(ConfigError):
            Config.from_env({**pg, **env})


def test_app_strategies_setting() -> None:
    assert Config.from_env({}).app_strategies == {}
    setting = " app1=merge, app2 = MANUAL,app3=keep-both,app4=last_write_wins,"
    config = Config.from_env({"STORAGE_APP_STRATEGIES": setting})
    assert config.app_strategies == {
        "app1": ConflictStrategy.MERGE,
        "app2": ConflictStrategy.MANUAL,
        "app3": ConflictStrategy.KEEP_BOTH,
        "app4": ConflictStrategy.LAST_WRITE_WINS,
    }
    for bad in ("app1", "app1=", "=merge", "app1=newest", "app1=unspecified", "a=merge,a=manual"):
        with pytest.raises(ConfigError) as caught:
            Config.from_env({"STORAGE_APP_STRATEGIES": bad})
        assert "STORAGE_APP_STRATEGIES" in str(caught.value)
