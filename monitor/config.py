"""Configuration: a TOML file, then environment variables, then built-in defaults.

The file is found from ``--config``, else ``$MONITOR_CONFIG``, else ``config/monitor.toml`` (if it
exists), else only the defaults are used. Environment variables ``MONITOR_<SECTION>__<KEY>``
override the file (for example ``MONITOR_DATABASE__URL``). Secrets are never read from the file:
the file names the environment variable that holds them (``[mail] password_env``).
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from monitor.errors import ConfigError
from monitor.paths import default_data_dir

DEFAULT_CONFIG_PATH = Path("config/monitor.toml")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30m, 24h, 7d)")
    try:
        return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"])
    except (OverflowError, ValueError):  # "99999999999w": beyond what a timedelta holds
        raise ValueError(f"duration too long: {value!r}") from None


MIN_INTERVAL = timedelta(minutes=5)  # the shortest scan interval (`--every`)
MAX_INTERVAL = timedelta(days=365)  # the longest: beyond it the next scan date makes no sense


def format_duration(value: timedelta) -> str:
    """``5m``, ``12h``, ``365d``: the shortest exact form of a whole number of seconds."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _within_interval_bounds(value: timedelta) -> timedelta:
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise ValueError(
            f"must be between {format_duration(MIN_INTERVAL)} and {format_duration(MAX_INTERVAL)}"
        )
    return value


def _header_value(value: str) -> str:
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in value):
        raise ValueError("must be one line, without control characters (no CR/LF)")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
# A value that goes into a mail header as it is: a CR/LF would break (or inject into) every mail.
HeaderValue = Annotated[str, AfterValidator(_header_value)]
# A scan or re-check interval: 5 minutes to 365 days.
Interval = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_within_interval_bounds)
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(_Section):
    url: str = ""  # empty: SQLite file in the data folder
    # The key that encrypts reference hashes at rest. Empty: "<data folder>.key" beside the data
    # folder (not in it). $MONITOR_REFERENCE_KEY, when set, holds the key itself instead.
    key_file: str = ""


class SearchBackendConfig(_Section):
    """One ``[[search.backends]]`` table.

    The keys every kind shares are checked here. Keys that belong to one kind (SearXNG's
    ``categories_web``, Brave's ``country``...) are kept as extra keys and checked by that kind's
    backend (``monitor/search/<kind>.py``) when it is built, with a :class:`ConfigError` that
    names the key; see ``docs/search.md``.
    """

    model_config = ConfigDict(extra="allow")

    kind: str = "searxng"
    url: str = ""  # empty: the kind's public API (brave, serpapi); searxng needs its instance URL
    name: str = ""  # shown in summaries; defaults to kind@host
    timeout: float = Field(default=20.0, gt=0)
    # The environment variable holding the API key (brave: BRAVE_API_KEY, serpapi:
    # SERPAPI_API_KEY when empty). The key itself is never written in the file.
    api_key_env: str = ""
    # serpapi: the engines asked (google, google_images, bing_images, yandex_images);
    # empty: the kind's default.
    engines: list[str] = Field(default_factory=list)


class BackendLimits(_Section):
    """Pacing and budget of one search backend (``[search.limits."<name or kind>"]``);
    unset fields take the ``[search]`` defaults (``rate``, ``burst``, ``concurrency``)."""

    rate: float | None = Field(default=None, gt=0)  # requests per second, on average
    burst: int | None = Field(default=None, ge=1)  # requests that may leave at once
    concurrency: int | None = Field(default=None, ge=1)  # requests in flight at once
    monthly_budget: int | None = Field(default=None, ge=0)  # requests per calendar month (UTC)


class SearchConfig(_Section):
    backends: list[SearchBackendConfig] = Field(default_factory=list)
    max_queries_per_scan: int = Field(default=24, ge=1)
    pages_per_query: int = Field(default=1, ge=1, le=10)
    # Search requests actually sent per scan, every results page and retry counted, all
    # backends together. Searches that do not fit are skipped (images first are kept).
    max_requests_per_scan: int = Field(default=100, ge=1)
    # Pacing per backend (a token bucket): `rate` requests a second, `burst` at once,
    # `concurrency` in flight. A "retry after" up to `max_wait` seconds is waited out; with a
    # longer one the backend is left alone until then, its searches skipped (and recorded).
    rate: float = Field(default=2.0, gt=0)
    burst: int = Field(default=4, ge=1)
    concurrency: int = Field(default=4, ge=1)
    max_wait: float = Field(default=30.0, ge=0)
    # Per backend, by its name or kind: rate, burst, concurrency, monthly_budget.
    limits: dict[str, BackendLimits] = Field(default_factory=dict)
    # After this many scans in a row in which a search backend answered none of its queries,
    # the person is told (once, discreetly) that monitoring is degraded; and once on recovery.
    degraded_after: int = Field(default=3, ge=1)


class FetchConfig(_Section):
    allow_private_networks: bool = False
    user_agent: str = (
        "ExposureMonitor/0.1 (finds images of a person published without consent; "
        "+https://github.com/exposure-monitor)"
    )
    timeout: float = Field(default=20.0, gt=0)
    max_concurrency: int = Field(default=16, ge=1)
    max_per_host: int = Field(default=4, ge=1)
    max_page_bytes: int = Field(default=5_000_000, ge=1024)
    max_image_bytes: int = Field(default=20_000_000, ge=1024)
    # Videos found on pages (<video>, og:video) are fetched up to this size, then sampled.
    max_video_bytes: int = Field(default=50_000_000, ge=1024)
    max_redirects: int = Field(default=5, ge=0)
    max_pages_per_scan: int = Field(default=500, ge=1)
    max_images_per_page: int = Field(default=200, ge=1)
    respect_robots: bool = True
    # The most seconds one fetch may spend on servers, redirects and the whole body included
    # (timeout bounds each wait between bytes; this bounds a server that drips them).
    deadline: float = Field(default=60.0, gt=0)
    # Requests to one host start at least this many seconds apart...
    min_host_interval: float = Field(default=0.0, ge=0)
    # ...or further apart when its robots.txt asks for a Crawl-delay, obeyed up to this many.
    max_crawl_delay: float = Field(default=10.0, ge=0)
    # Ask again for images seen in earlier scans with If-None-Match / If-Modified-Since, and
    # reuse their stored hashes when unchanged (the cache keeps URL, validators and hashes only).
    conditional_requests: bool = True
    # An image whose server says it stays the same for a while (Cache-Control max-age, Expires)
    # is not asked for again within that time, up to this long: its stored hashes are reused
    # without a request. An image swapped at the same URL is seen up to this late. 0: off.
    max_cache_age: Duration = timedelta(hours=12)


class MatchConfig(_Section):
    # The whole found image against a reference photo's own PDQ hash (one hash per photo: few
    # chances to meet a look-alike, so it can reach further than the variants; issue 10).
    pdq_threshold: int = Field(default=70, ge=0, le=256)
    phash_threshold: int = Field(default=10, ge=0, le=64)
    # Found images with a lower PDQ quality (blank, flat, tiny) are never matched.
    min_quality: int = Field(default=50, ge=0, le=100)
    # Reference variants stored at enrolment (mirror, quarter turns, crops, small rotations).
    variants: bool = True
    variant_pdq_threshold: int = Field(default=56, ge=0, le=256)
    # The PDQ hash of a found image's content box (padding, letterbox, screenshot of a post).
    regions: bool = True
    region_pdq_threshold: int = Field(default=52, ge=0, le=256)
    # Second stage (monitor/second_stage.py): a found image that matched nothing but has a PDQ
    # hash within second_stage_grey of any stored hash is turned back by 1-5 degrees
    # (second_stage_pdq_threshold, against every stored hash) and cut to crop windows (each
    # against the same window of each photo: second_stage_window_threshold).
    second_stage: bool = True
    second_stage_grey: int = Field(default=90, ge=0, le=256)
    second_stage_pdq_threshold: int = Field(default=52, ge=0, le=256)
    second_stage_window_threshold: int = Field(default=64, ge=0, le=256)
    # Content boxes (or the whole picture) cut to common photo shapes: compared with every
    # stored hash; stricter (an unrelated photo came to 66 bits of one on held-out photos).
    second_stage_aspect_threshold: int = Field(default=46, ge=0, le=256)
    # Hashes of found images no person matched are kept this long after the image was last
    # seen (a photo enrolled later is matched against them: monitor/retro.py), then deleted.
    keep_seen_days: int = Field(default=90, ge=1)


class MailConfig(_Section):
    smtp_host: str = ""  # empty: alerts go to the local outbox folder
    smtp_port: int = 587
    username: str = ""
    password_env: str = "MONITOR_SMTP_PASSWORD"
    starttls: bool = True
    tls: bool = False  # implicit TLS (usually port 465); excludes starttls
    timeout: float = 30.0
    sender: HeaderValue = "Monitor <monitor@localhost>"
    subject: str = "You have a new notification"
    detail: Literal["discreet", "full"] = "discreet"
    outbox_dir: str = ""  # empty: <data dir>/outbox
    max_attempts: int = Field(default=50, ge=1)
    retry_base: Duration = timedelta(seconds=30)
    retry_max: Duration = timedelta(hours=6)
    # Support lines at the end of every alert. None: chosen by ``country`` (monitor/support.py:
    # helplines, police and emergency number of that country, then international ones).
    support_contacts: list[str] | None = None
    country: str = ""  # ISO 3166 code: "NL", "BQ" (Caribbean Netherlands), "GB", "US"...
    support_lines: bool = True  # false: alerts carry no support lines at all (more discreet)

    def password(self) -> str | None:
        """The SMTP password, read from the environment variable the file names."""
        if not self.password_env:
            return None
        return os.environ.get(self.password_env) or None


class ScheduleConfig(_Section):
    default_interval: Interval = timedelta(hours=24)
    jitter: Duration = timedelta(minutes=10)
    check_every: Duration = timedelta(minutes=1)  # how often `run` looks for due scans


class CasesConfig(_Section):
    """Cases: evidence at first sighting, re-checks, who to contact, removal requests."""

    capture_evidence: bool = True  # capture evidence (WARC, blurred screenshot) at first sighting
    screenshots: bool = True  # part of the evidence: a blurred screenshot (needs Chromium)
    screenshot_timeout: float = Field(default=45.0, gt=0)  # seconds per screenshot
    screenshot_javascript: bool = False  # run pages' scripts for screenshots (WebRTC stays off)
    recheck_every: Duration = timedelta(hours=24)  # how often every open case is fetched again
    # A place is only "gone" (the image URL answers 404/410, or its content no longer matches)
    # when a second check at least this much later still says so.
    recheck_confirm: Duration = timedelta(hours=6)
    max_recheck_images: int = Field(default=50, ge=1)  # images per page compared on a re-check
    reply_to: str = ""  # contact address in removal requests (a relay); empty: ask per notice
    templates_dir: str = ""  # a folder with your own notice_en.txt.j2 / notice_nl.txt.j2
    rdap_domain_url: str = "https://rdap.org/domain/"  # + domain name
    rdap_ip_url: str = "https://rdap.org/ip/"  # + IP address
    max_contact_pages: int = Field(default=3, ge=0)  # contact pages followed (one hop)
    hotline_name: str = ""  # the child-abuse hotline for your region; empty: list the defaults
    hotline_url: str = ""
    hotlines: list[str] = Field(
        default_factory=lambda: [
            "NCMEC CyberTipline (US): https://report.cybertip.org",
            "Internet Watch Foundation (UK): https://report.iwf.org.uk",
            "Offlimits (NL): https://www.offlimits.nl",
            "INHOPE (other countries): https://www.inhope.org",
        ]
    )
    removal_forms: list[str] = Field(
        default_factory=lambda: [
            "Google, Remove non-consensual explicit imagery: "
            "https://support.google.com/websearch/answer/6302812",
            "Bing, Report a concern - NCII: https://www.microsoft.com/en-us/concern/revengeporn",
            "StopNCII.org (blocks re-uploads on partner platforms by hash): https://stopncii.org",
            "Take It Down (images taken before you were 18): https://takeitdown.ncmec.org",
        ]
    )


class OrgsConfig(_Section):
    """Organisations monitoring people on consent (monitor/orgs, docs/organisations.md)."""

    # Findings and evidence of closed cases (removed, or dismissed as not the person) are
    # deleted this many days after the case closed; 0 keeps them (docs/data-protection.md).
    retention_days: int = Field(default=0, ge=0)
    # Consent by a mailed link: the address the person opens to confirm, the code appended
    # (e.g. your web app's "https://help.example/confirm?code="); empty: the mail gives the
    # code to pass on to their caseworker (`consent confirm CODE`).
    confirm_url: str = ""


class WebConfig(_Section):
    """The local web app (``serve``, monitor/web/)."""

    host: str = "127.0.0.1"  # anything but loopback needs `serve --public --cert --key`
    port: int = Field(default=8765, ge=1, le=65535)
    idle_timeout: Duration = timedelta(minutes=15)  # a session locks after this long unused
    # What alerts link to; empty: http://<host>:<port>. Set it when serving behind a name.
    public_url: str = ""
    alert_link: bool = True  # alerts point to the web page (false: to the command line)
    language: Literal["en", "nl"] = "en"
    # Where "Exit this page" goes: a neutral site that replaces this one in the history.
    exit_url: str = "https://www.bbc.co.uk/weather"
    max_upload_bytes: int = Field(default=50_000_000, ge=1_000_000)  # one enrolment upload

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class QueueConfig(_Section):
    """``[queue]``: scans as jobs on Celery workers (docs/scale.md). Empty ``broker_url``: every
    scan runs in the process that starts it, as without this section."""

    # redis://host:6379/0 or amqp://user:pass@host:5672// (RabbitMQ); empty: no queue.
    broker_url: str = ""
    # Where a job's summary waits for `scan --queue`; empty: the broker (Redis), or rpc://
    # for RabbitMQ.
    result_backend: str = ""
    # Redis that keeps the politeness and search rate shared by all workers (per-host intervals,
    # robots.txt Crawl-delay, per-backend rate); empty: the broker when it is Redis, else each
    # worker keeps its own (as one process does).
    limits_url: str = ""
    # An unacknowledged job (its worker died) goes to another worker after this long (Redis
    # broker; RabbitMQ gives it back as soon as the worker's connection drops).
    visibility_timeout: Duration = timedelta(seconds=60)
    # A worker's hold on a person's scan, renewed every third of it while the scan runs: a
    # worker that died on another machine blocks the person at most this long.
    lease: Duration = timedelta(seconds=60)
    # Prefix of the queues' names and of every key kept in Redis, to share one Redis or
    # RabbitMQ between installs.
    key_prefix: str = ""
    fetch_concurrency: int = Field(default=4, ge=1)  # scans searched/fetched at once per worker
    hash_concurrency: int = Field(default=2, ge=1)  # scans hashed at once per worker
    hash_processes: int = Field(default=0, ge=0)  # hashing processes per worker; 0: one per core

    @property
    def enabled(self) -> bool:
        return bool(self.broker_url)

    @property
    def backend_url(self) -> str:
        if self.result_backend:
            return self.result_backend
        return self.broker_url if self.broker_url.startswith(("redis", "rediss")) else "rpc://"

    @property
    def shared_limits_url(self) -> str:
        if self.limits_url:
            return self.limits_url
        return self.broker_url if self.broker_url.startswith(("redis:", "rediss:")) else ""


class _EnvWithoutDataDir(EnvSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name == "data_dir":
            return None, field_name, False
        return super().get_field_value(field, field_name)


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="MONITOR_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    match: MatchConfig = Field(default_factory=MatchConfig)
    mail: MailConfig = Field(default_factory=MailConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    orgs: OrgsConfig = Field(default_factory=OrgsConfig)
    cases: CasesConfig = Field(default_factory=CasesConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)

    config_file: ClassVar[Path | None] = None  # set by load_settings on a subclass

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # $MONITOR_DATA_DIR only supplies the default data folder (see default_data_dir): a
        # data_dir written in the file wins over it, as the example configuration documents.
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            _EnvWithoutDataDir(settings_cls),
        ]
        toml_file = getattr(settings_cls, "config_file", None)
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'monitor.db'}"

    @property
    def key_path(self) -> Path:
        """The key file for reference hashes (see :mod:`monitor.secrets`)."""
        from monitor.secrets import default_key_path

        if self.database.key_file:
            return Path(self.database.key_file).expanduser()
        return default_key_path(self.database_url, data_dir=self.data_dir)

    @property
    def outbox_dir(self) -> Path:
        return (
            Path(self.mail.outbox_dir).expanduser()
            if self.mail.outbox_dir
            else (self.data_dir / "outbox")
        )


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """``--config``, else ``$MONITOR_CONFIG``, else ``config/monitor.toml`` if present."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    env = os.environ.get("MONITOR_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file named by $MONITOR_CONFIG not found: {path}")
        return path
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load the configuration; raise :class:`ConfigError` with a readable message if it is bad."""
    config_path = resolve_config_path(path)
    if config_path is not None:
        try:
            with open(config_path, "rb") as fh:
                tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
    cls = type("Settings", (Settings,), {"config_file": config_path})
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        where = str(config_path) if config_path else "configuration"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from exc
    return settings
