"""The daemon config (`config.example.yaml`): its schema, and the loaded, frozen result."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from mirrord.config.extensions import SelectionOptions
from mirrord.config.fields import Duration, EmptyIfNull, Model, Naming, Platforms, Regex, TLSChoice
from mirrord.config.naming import Destination
from mirrord.config.registries import CredentialsSpec, RegistrySettings, registry_options
from mirrord.config.skopeo import SkopeoFile
from mirrord.model import PlatformPolicy
from mirrord.plan import RepoSelection
from mirrord.registry.options import RegistryOptions
from mirrord.secret import Secret
from mirrord.tagregex import TagRegex

DEFAULT_DATABASE = "sqlite:////var/lib/mirrord/mirrord.db"
DEFAULT_LISTEN = "127.0.0.1:9464"
DEFAULT_PROTECTED_TAGS = r"\.(sig|att|sbom)$"
_DATABASE_SCHEMES = ("sqlite", "sqlite+aiosqlite", "postgresql", "postgresql+asyncpg")
_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})")


class LogSpec(Model):
    """`log`: JSON lines for the daemon (journald, shippers) or text for people; `auto` picks
    text when stderr is a terminal."""

    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class ScheduleSpec(Model):
    """`{interval: 1h}` or `{cron: "0 2 * * *"}`."""

    interval: Duration | None = None
    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        from croniter import croniter  # loaded only for configs with a cron schedule

        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r} (e.g. '0 2 * * *')")
        return value

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("the interval must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _one(self) -> ScheduleSpec:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("give exactly one of interval and cron")
        return self


class PerRegistryLimits(Model):
    """`limits.per-registry`: the default for each registry (see `registries:`)."""

    requests_per_second: PositiveFloat | None = Field(None, alias="requests-per-second")
    connections: PositiveInt = 16


class LimitsSpec(Model):
    """`limits`: how much runs at once, and for how long."""

    jobs: PositiveInt = 16
    blobs: PositiveInt = 16
    per_registry: PerRegistryLimits = Field(default_factory=PerRegistryLimits, alias="per-registry")
    job_timeout: Duration = Field(timedelta(hours=1), alias="job-timeout")
    # A registry's pause longer than this sends the job back to the queue (see EngineLimits).
    defer_after: Duration = Field(timedelta(seconds=30), alias="defer-after")


class RetrySpec(Model):
    """`retry`: tries per job, and the capped exponential backoff between them."""

    attempts: PositiveInt = 5
    base: Duration = timedelta(seconds=2)
    max: Duration = timedelta(minutes=10)

    @model_validator(mode="after")
    def _ordered(self) -> RetrySpec:
        if self.base > self.max:
            raise ValueError("retry.base must not exceed retry.max")
        return self


class PruneSpec(Model):
    """`prune: true` or `{enabled: true, protect: REGEX}` (tags never deleted)."""

    enabled: bool = False
    protect: Regex = TagRegex.compile(DEFAULT_PROTECTED_TAGS)

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class HistorySpec(Model):
    """`history`: how long finished jobs and runs are kept."""

    keep_days: PositiveFloat = Field(30.0, alias="keep-days")
    keep_jobs: PositiveInt = Field(100_000, alias="keep-jobs")


class HttpSpec(Model):
    """`http`: the bearer token the /api endpoints require, if any."""

    token_file: str | None = Field(None, alias="token-file")


class DestinationSpec(Model):
    """skopeo sync's DESTINATION argument and its flags."""

    registry: str
    prefix: str = ""
    scoped: bool = False
    naming: Naming | None = None
    append_suffix: str = Field("", alias="append-suffix")
    tls: TLSChoice | None = None
    tls_verify: bool | None = Field(None, alias="tls-verify")
    cert_dir: str | None = Field(None, alias="cert-dir")
    credentials: CredentialsSpec | None = None


class RegistrySpec(Model):
    """`registries.<host>`: connection settings kept out of the source files."""

    tls: TLSChoice | None = None
    tls_verify: bool | None = Field(None, alias="tls-verify")
    cert_dir: str | None = Field(None, alias="cert-dir")
    credentials: CredentialsSpec | None = None
    ratelimit_floor: NonNegativeInt | None = Field(None, alias="ratelimit-floor")
    requests_per_second: PositiveFloat | None = Field(None, alias="requests-per-second")
    connections: PositiveInt | None = None


class SourceSpec(SelectionOptions):
    """One entry of `sources`: a skopeo file (or glob), a list file, or inline skopeo YAML."""

    name: str | None = None
    file: str | None = None
    list_: str | None = Field(None, alias="list")
    registry: str | None = None
    inline: SkopeoFile | None = None
    naming: Naming | None = None
    prefix: str | None = None
    append_suffix: str | None = Field(None, alias="append-suffix")

    @model_validator(mode="after")
    def _one_kind(self) -> SourceSpec:
        if sum(v is not None for v in (self.file, self.list_, self.inline)) != 1:
            raise ValueError("give exactly one of file, list and inline")
        if self.registry is not None and self.list_ is None:
            raise ValueError("registry only applies to a list source")
        return self


class DaemonSpec(Model):
    """The daemon config file as written."""

    database: str = Field(DEFAULT_DATABASE, repr=False)
    listen: str = DEFAULT_LISTEN
    log: LogSpec = Field(default_factory=LogSpec)
    destination: DestinationSpec
    schedule: ScheduleSpec | None = None
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    platforms: Platforms = Field(default_factory=PlatformPolicy.all)
    prune: PruneSpec = Field(default_factory=PruneSpec)
    http: HttpSpec = Field(default_factory=HttpSpec)
    history: HistorySpec = Field(default_factory=HistorySpec)
    registries: Annotated[dict[str, RegistrySpec | None], EmptyIfNull] = Field(default_factory=dict)
    sources: list[SourceSpec] = Field(min_length=1)

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if scheme not in _DATABASE_SCHEMES:
            # The URL itself is not repeated: it may hold a password.
            raise ValueError(f"expected a URL starting with one of {', '.join(_DATABASE_SCHEMES)}")
        try:
            port = urlsplit(value).port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("the port is not a number from 1 to 65535")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        m = _LISTEN.fullmatch(value)
        if m is None or not 0 < int(m["port"]) < 65536:
            raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9464), got {value[:60]!r}")
        return value


@dataclass(frozen=True, slots=True)
class Source:
    """One loaded source: its name, where it came from, and what it selects."""

    name: str
    kind: Literal["file", "list", "inline"]
    origin: str
    selections: tuple[RepoSelection, ...]


@dataclass(frozen=True)
class MirrorConfig:
    """A loaded, validated configuration: nothing inward re-reads YAML or the environment."""

    spec: DaemonSpec = field(repr=False)
    destination: Destination
    sources: tuple[Source, ...]
    registries: dict[str, RegistrySettings] = field(repr=False)
    path: Path | None = None
    http_token: Secret | None = field(default=None, repr=False)

    @property
    def database(self) -> str:
        return self.spec.database

    @property
    def listen(self) -> tuple[str, int]:
        """(host, port) to bind; IPv6 hosts without brackets."""
        m = _LISTEN.fullmatch(self.spec.listen)
        assert m is not None  # validated at load
        return m["host"].strip("[]"), int(m["port"])

    @property
    def log(self) -> LogSpec:
        return self.spec.log

    @property
    def schedule(self) -> ScheduleSpec | None:
        return self.spec.schedule

    @property
    def limits(self) -> LimitsSpec:
        return self.spec.limits

    @property
    def retry(self) -> RetrySpec:
        return self.spec.retry

    @property
    def platforms(self) -> PlatformPolicy:
        return self.spec.platforms

    @property
    def prune(self) -> PruneSpec:
        return self.spec.prune

    @property
    def history(self) -> HistorySpec:
        return self.spec.history

    @property
    def selections(self) -> tuple[RepoSelection, ...]:
        """Every source's selections, in configuration order."""
        return tuple(s for source in self.sources for s in source.selections)

    def registry_options(self, host: str) -> RegistryOptions:
        """How to reach `host` (a source or the destination registry)."""
        per_registry = self.limits.per_registry
        settings = self.registries.get(host, RegistrySettings())
        return registry_options(
            settings, per_registry.requests_per_second, per_registry.connections
        )

    def summary(self) -> str:
        """One line: what this configuration mirrors, and where to."""
        selections = self.selections
        repos = len({s.source for s in selections})
        listed = sum(s.needs_listing for s in selections)
        registries = len({s.source.registry for s in selections})
        return (
            f"{_count(len(self.sources), 'source')}, {_count(repos, 'repository')} "
            f"({listed} listed by tag) from {_count(registries, 'registry')} -> {self.destination}"
        )


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"
