"""Configuration: read from the environment (and flags) and validated in one place.

Every setting is a ``STORAGE_*`` environment variable; the command line may override some.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tmcp_storage_server import logs, tls_files
from tmcp_storage_server.model import ConflictStrategy, QuotaLimits

MIB = 1024 * 1024


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Config:
    """Server settings."""

    listen: str = "127.0.0.1:50051"
    """``STORAGE_LISTEN``: host:port of the gRPC server."""
    data_dir: str = "./data"
    """``STORAGE_DATA_DIR``: where the embedded database and generated secret live."""
    database_url: str = ""
    """``STORAGE_DATABASE_URL``: ``sqlite:///path`` or ``postgresql://...``; default an
    SQLite file in the data directory."""
    jwt_secret: str = field(default="", repr=False)
    """``STORAGE_JWT_SECRET``: HS256 secret. Unset with SQLite: generated into
    ``<data_dir>/jwt-secret``. Required with PostgreSQL."""
    redis_url: str = ""
    """``STORAGE_REDIS_URL``: optional Redis: the shared cache level (L2) and the channel
    that carries cache invalidations between processes and replicas."""
    redis_prefix: str = "tmcp:"
    """``STORAGE_REDIS_PREFIX``: prefix of every Redis key and channel this server uses."""
    cache_bytes: int = 64 * MIB
    """``STORAGE_CACHE_BYTES``: bound of the in-process cache (L1) per process; 0 disables
    it."""
    cache_max_age: float = 2.0
    """``STORAGE_CACHE_MAX_AGE``: seconds an L1 item may be served after it was read while
    invalidations cannot arrive (Redis down, or PostgreSQL without Redis)."""
    cache_ttl: float = 60.0
    """``STORAGE_CACHE_TTL``: seconds any cached read lives at most, even when every
    invalidation arrives (a safety net under pub/sub)."""
    cache_negative_ttl: float = 2.0
    """``STORAGE_CACHE_NEGATIVE_TTL``: seconds an "absent" answer stays cached."""
    workers: int = 1
    """``STORAGE_WORKERS`` or ``serve --workers``: server processes sharing the port;
    default the number of cores (always 1 with the embedded SQLite database)."""
    limits: QuotaLimits = field(default_factory=lambda: QuotaLimits(10 * MIB, 1000, MIB))
    """``STORAGE_LIMIT_BYTES``, ``STORAGE_LIMIT_KEYS``, ``STORAGE_MAX_VALUE_BYTES``:
    default quota of a space."""
    sweep_interval: float = 1.0
    """``STORAGE_SWEEP_INTERVAL``: seconds between background sweeps of expired entries."""
    shutdown_grace: float = 10.0
    """``STORAGE_SHUTDOWN_GRACE``: seconds in-flight calls get to finish on shutdown."""
    history_retention: float = 7 * 24 * 3600.0
    """``STORAGE_HISTORY_RETENTION``: seconds of change history (tombstones, change rows,
    push outcomes) kept for sync; an older Pull cursor gets a reset and a full snapshot."""
    watch_heartbeat: float = 15.0
    """``STORAGE_WATCH_HEARTBEAT``: seconds of silence before a watch sends a heartbeat."""
    watch_max_lag: int = 10_000
    """``STORAGE_WATCH_MAX_LAG``: revisions a watcher may fall behind before it is ended
    with RESOURCE_EXHAUSTED ``SLOW_CONSUMER`` and its resume cursor."""
    watch_poll: float = 5.0
    """``STORAGE_WATCH_POLL``: seconds between a watcher's reads when nothing woke it."""
    app_strategies: Mapping[str, ConflictStrategy] = field(default_factory=dict)
    """``STORAGE_APP_STRATEGIES``: ``app1=merge,app2=manual``: the conflict strategy of a
    push (or Stream) that names none, per app; other apps get LAST_WRITE_WINS."""
    db_pool_size: int = 10
    """``STORAGE_DB_POOL_SIZE``: PostgreSQL connections per process."""
    log_level: str = "INFO"
    """``STORAGE_LOG_LEVEL``."""
    metrics_listen: str = "127.0.0.1:9090"
    """``STORAGE_METRICS_LISTEN``: host:port of the Prometheus ``/metrics`` endpoint (port
    0 picks one); "" turns it off. With workers the supervisor serves it for all."""
    log_format: str = "json"
    """``STORAGE_LOG_FORMAT``: ``json`` (one object per line) or ``text`` (for humans)."""
    tls_cert: str = ""
    """``STORAGE_TLS_CERT``: PEM certificate (chain) of the gRPC port; with ``tls_key``, the
    port speaks TLS only."""
    tls_key: str = ""
    """``STORAGE_TLS_KEY``: PEM private key (unencrypted) of ``tls_cert``."""
    tls_client_ca: str = ""
    """``STORAGE_TLS_CLIENT_CA``: PEM certificates of the CAs that sign client certificates;
    set = mutual TLS: every connection must present a certificate they signed."""
    max_streams: int = 1000
    """``STORAGE_MAX_STREAMS``: concurrent streams (calls) per connection; a client's extra
    calls wait in its own queue. 0 = gRPC's default (no limit)."""
    keepalive_min_ping: float = 10.0
    """``STORAGE_KEEPALIVE_MIN_PING``: seconds; a client that pings more often is sent
    GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings") after two such pings."""
    write_rate: float = 0.0
    """``STORAGE_WRITE_RATE``: writes per second per space, per process; 0 = unlimited."""
    write_burst: int = 0
    """``STORAGE_WRITE_BURST``: writes a space may make at once before the rate applies;
    0 = twice ``write_rate`` (at least 1)."""

    web_listen: str = ""
    """``STORAGE_WEB_LISTEN``: host:port of the in-process gRPC-Web gateway; "" = off."""
    web_origins: tuple[str, ...] = ()
    """``STORAGE_WEB_ORIGINS``: comma-separated exact origins (``scheme://host[:port]``,
    or ``*`` for any) that browsers may call the gateway from; other origins are refused."""

    @property
    def tls(self) -> bool:
        """Whether the gRPC port speaks TLS."""
        return bool(self.tls_cert)

    @property
    def embedded(self) -> bool:
        """Whether the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite:")

    @property
    def sqlite_path(self) -> str:
        """The file of an ``sqlite:///path`` URL (``sqlite:////abs`` or ``sqlite:///rel``)."""
        return self.database_url.removeprefix("sqlite:///")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: str | None) -> Config:
        """Settings from ``env``; non-None ``overrides`` (flags) win over the environment."""
        values = {k: v for k, v in env.items() if k.startswith("STORAGE_")}
        values.update({f"STORAGE_{k.upper()}": v for k, v in overrides.items() if v is not None})
        d = _DEFAULTS
        data_dir = values.get("STORAGE_DATA_DIR", d.data_dir)
        database_url = values.get("STORAGE_DATABASE_URL") or (
            "sqlite:///" + os.path.join(data_dir, "storage.db")
        )
        if not database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError("STORAGE_DATABASE_URL must start with sqlite:/// or postgresql://")
        listen = values.get("STORAGE_LISTEN", d.listen)
        if ":" not in listen or not listen.rsplit(":", 1)[1].isdigit():
            raise ConfigError(f"STORAGE_LISTEN must be host:port, not {listen!r}")
        config = cls(
            listen=listen,
            data_dir=data_dir,
            database_url=database_url,
            jwt_secret=values.get("STORAGE_JWT_SECRET", ""),
            redis_url=values.get("STORAGE_REDIS_URL", ""),
            redis_prefix=values.get("STORAGE_REDIS_PREFIX", d.redis_prefix),
            cache_bytes=_int(values, "STORAGE_CACHE_BYTES", d.cache_bytes),
            cache_max_age=_float(values, "STORAGE_CACHE_MAX_AGE", d.cache_max_age),
            cache_ttl=_float(values, "STORAGE_CACHE_TTL", d.cache_ttl),
            cache_negative_ttl=_float(values, "STORAGE_CACHE_NEGATIVE_TTL", d.cache_negative_ttl),
            # The embedded database takes one process: only a request for more is warned of.
            workers=_int(
                values, "STORAGE_WORKERS", 1 if database_url.startswith("sqlite:") else _cores()
            ),
            limits=QuotaLimits(
                _int(values, "STORAGE_LIMIT_BYTES", d.limits.limit_bytes),
                _int(values, "STORAGE_LIMIT_KEYS", d.limits.limit_keys),
                _int(values, "STORAGE_MAX_VALUE_BYTES", d.limits.max_value_bytes),
            ),
            sweep_interval=_float(values, "STORAGE_SWEEP_INTERVAL", d.sweep_interval),
            shutdown_grace=_float(values, "STORAGE_SHUTDOWN_GRACE", d.shutdown_grace),
            db_pool_size=_int(values, "STORAGE_DB_POOL_SIZE", d.db_pool_size),
            watch_heartbeat=_float(values, "STORAGE_WATCH_HEARTBEAT", d.watch_heartbeat),
            watch_max_lag=_int(values, "STORAGE_WATCH_MAX_LAG", d.watch_max_lag),
            watch_poll=_float(values, "STORAGE_WATCH_POLL", d.watch_poll),
            history_retention=_float(values, "STORAGE_HISTORY_RETENTION", d.history_retention),
            app_strategies=parse_app_strategies(values.get("STORAGE_APP_STRATEGIES", "")),
            log_level=values.get("STORAGE_LOG_LEVEL", d.log_level).upper(),
            tls_cert=values.get("STORAGE_TLS_CERT", ""),
            tls_key=values.get("STORAGE_TLS_KEY", ""),
            tls_client_ca=values.get("STORAGE_TLS_CLIENT_CA", ""),
            max_streams=_int(values, "STORAGE_MAX_STREAMS", d.max_streams),
            keepalive_min_ping=_float(values, "STORAGE_KEEPALIVE_MIN_PING", d.keepalive_min_ping),
            write_rate=_rate(values, "STORAGE_WRITE_RATE", d.write_rate),
            write_burst=_int(values, "STORAGE_WRITE_BURST", d.write_burst),
            web_listen=parse_listen(
                "STORAGE_WEB_LISTEN", values.get("STORAGE_WEB_LISTEN", d.web_listen)
            ),
            web_origins=parse_origins(values.get("STORAGE_WEB_ORIGINS", "")),
            metrics_listen=values.get("STORAGE_METRICS_LISTEN", d.metrics_listen).strip(),
            log_format=values.get("STORAGE_LOG_FORMAT", d.log_format).strip().lower(),
        )
        _check_observability(config)
        tls_problem = tls_files.check(config.tls_cert, config.tls_key, config.tls_client_ca)
        if tls_problem is not None:
            raise ConfigError(tls_problem)
        if config.tls and config.web_listen:
            # The in-process gateway reaches the gRPC port over loopback without credentials.
            raise ConfigError(
                "STORAGE_WEB_LISTEN cannot be combined with STORAGE_TLS_*: terminate TLS "
                "and gRPC-Web in Envoy (deploy/envoy.yaml) instead"
            )
        if not 0 < config.limits.max_value_bytes <= MIB:
            raise ConfigError("STORAGE_MAX_VALUE_BYTES must be 1..1048576")
        if config.redis_url and not config.redis_url.startswith(("redis://", "rediss://")):
            raise ConfigError("STORAGE_REDIS_URL must start with redis:// or rediss://")
        if config.workers < 1:
            raise ConfigError("STORAGE_WORKERS must be at least 1")
        if not config.embedded and not config.jwt_secret:
            raise ConfigError("STORAGE_JWT_SECRET is required with PostgreSQL")
        return config

    def resolve_secret(self) -> tuple[Config, str | None]:
        """The config with its JWT secret, generating one into the data directory for the
        embedded setup; also the file it came from, if any."""
        if self.jwt_secret:
            return self, None
        path = Path(self.data_dir) / "jwt-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
        secret = path.read_text().strip()
        return replace(self, jwt_secret=secret), str(path)


_DEFAULTS = Config()


def _check_observability(config: Config) -> None:
    parse_listen("STORAGE_METRICS_LISTEN", config.metrics_listen)
    if config.log_format not in logs.FORMATS:
        raise ConfigError(f"STORAGE_LOG_FORMAT must be json or text, not {config.log_format!r}")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_STRATEGY_NAMES = {
    s.name.lower(): s for s in ConflictStrategy if s is not ConflictStrategy.UNSPECIFIED
}


def parse_app_strategies(text: str) -> dict[str, ConflictStrategy]:
    """``app1=merge, app2=manual`` as a map; strategy names are case-insensitive and may use
    ``-`` for ``_`` (``keep-both``)."""
    result: dict[str, ConflictStrategy] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        app, sep, name = (s.strip() for s in item.partition("="))
        strategy = _STRATEGY_NAMES.get(name.lower().replace("-", "_"))
        if not sep or not app or strategy is None:
            raise ConfigError(
                f"STORAGE_APP_STRATEGIES: {item!r} is not app=strategy with strategy one of "
                + ", ".join(sorted(_STRATEGY_NAMES))
            )
        if app in result:
            raise ConfigError(f"STORAGE_APP_STRATEGIES names app {app!r} twice")
        result[app] = strategy
    return result


def _rate(values: Mapping[str, str], name: str, default: float) -> float:
    try:
        result = float(values[name]) if name in values else default
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if not 0 <= result < float("inf"):
        raise ConfigError(f"{name} must be 0 (unlimited) or a positive number")
    return result


def parse_listen(name: str, text: str) -> str:
    """An optional listening address (``STORAGE_WEB_LISTEN``, ``..._METRICS_LISTEN``):
    "" (off) or host:port."""
    listen = text.strip()
    if listen and (":" not in listen or not listen.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"{name} must be host:port or empty, not {listen!r}")
    return listen


_ORIGIN = re.compile(r"https?://[^/\s:]+(:\d{1,5})?|https?://\[[0-9a-fA-F:.]+\](:\d{1,5})?")


def parse_origins(text: str) -> tuple[str, ...]:
    """``STORAGE_WEB_ORIGINS``: exact origins as a browser sends them (no path, no
    trailing slash; lower-cased, as browsers send them), or ``*``."""
    origins = tuple(filter(None, (part.strip().lower() for part in text.split(","))))
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"STORAGE_WEB_ORIGINS: {origin!r} is not an origin like http://host:port"
            )
    return origins


def _int(values: Mapping[str, str], name: str, default: int) -> int:
    try:
        result = int(values[name]) if name in values else default
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None
    if result < 0:
        raise ConfigError(f"{name} must not be negative")
    return result


def _float(values: Mapping[str, str], name: str, default: float) -> float:
    try:
        result = float(values[name]) if name in values else default
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if result <= 0:
        raise ConfigError(f"{name} must be positive")
    return result
