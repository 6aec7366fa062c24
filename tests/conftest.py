"""Shared fixtures: the photo corpus, settings for a loopback web, a fresh database."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from monitor.config import Settings

pytest_plugins = ["tests.search_support"]  # shared fixtures of the search backend tests

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command line in this process: ``(exit code, stdout, stderr)``."""
    from monitor.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def corpus_files(folder: str, limit: int | None = None) -> list[Path]:
    """Photos from ../shared/corpus/<folder>, sorted; skip the test when the corpus is absent."""
    path = CORPUS / folder
    if not path.is_dir():
        pytest.skip(f"photo corpus not found at {path} (see the README's test data section)")
    files = sorted(p for p in path.iterdir() if p.is_file())
    return files[:limit] if limit else files


def quality_edits():  # noqa: ANN201 - the benchmark module
    """``benchmarks/quality_edits.py`` (the edit families of the quality benchmark), loaded
    once per test session."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "quality_edits", REPO / "benchmarks" / "quality_edits.py"
    )
    assert spec is not None and spec.loader is not None
    qe = sys.modules.setdefault("quality_edits", importlib.util.module_from_spec(spec))
    if not hasattr(qe, "FAMILIES"):
        spec.loader.exec_module(qe)
    return qe


def loopback_settings(tmp_path: Path, searxng_url: str, **mail: object) -> Settings:
    """Settings for a scan of a loopback web, with everything stored under ``tmp_path``.
    Searches are not paced to the default 2 a second (scans one after another would wait for
    the loopback search engine; tests/test_pacing.py is about pacing)."""
    return Settings(
        data_dir=tmp_path / "data",
        search={"backends": [{"kind": "searxng", "url": searxng_url}], "rate": 1000.0},
        fetch={"allow_private_networks": True, "timeout": 10},
        mail={"retry_base": "1s", **mail},
    )


TEST_DATABASE_ENV = "MONITOR_TEST_DATABASE_URL"
"""Set to a PostgreSQL URL (``postgresql+psycopg://postgres@127.0.0.1:5432/test``), the whole
suite runs on PostgreSQL: each test gets a fresh schema there as its default database
(``$MONITOR_DATABASE__URL``), instead of an SQLite file in its data folder. Tests that name an
SQLite URL themselves keep it (as init arguments; one written in a configuration file is
overridden by the environment, so those tests are marked), and so do tests marked
``sqlite_default`` (they check the SQLite file a default installation uses). CI runs SQLite
only."""


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[None]:
    """No test reads the developer's configuration or data folder."""
    for var in ("MONITOR_CONFIG", "MONITOR_DATABASE__URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MONITOR_DATA_DIR", str(tmp_path / "default-data"))
    shared = os.environ.get(TEST_DATABASE_ENV, "")
    if not shared or request.node.get_closest_marker("sqlite_default"):
        yield
        return
    with _fresh_schema(shared) as url:
        monkeypatch.setenv("MONITOR_DATABASE__URL", url)
        yield


@contextmanager
def _fresh_schema(url: str) -> Iterator[str]:
    """``url`` with a new, empty schema of its own as the search path; dropped afterwards."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    if base.get_backend_name() != "postgresql":
        raise pytest.UsageError(f"${TEST_DATABASE_ENV} must be a PostgreSQL URL, got {url}")
    dsn = base.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            with suppress(psycopg.Error):  # still in use by a leaked connection: leave it
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_answers() -> str | None:
    """None when PostgreSQL answers at localhost:5432, else the reason it does not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install '.[test]')"
    try:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3
        ):
            return None
    except Exception as exc:  # any failure to connect is a reason to skip
        return f"PostgreSQL at 127.0.0.1:5432/test does not answer: {exc}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh, empty database: an SQLite file, and a private schema in the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    reason = _postgres_answers()
    if reason:
        pytest.skip(reason)
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(autouse=True)
def _fresh_search_pacing() -> Iterator[None]:
    """Each test starts with no pacing state shared from another (backends on loopback ports
    that the next test may get again)."""
    from monitor.search.pacing import forget_shared

    forget_shared()
    yield
    forget_shared()


@pytest.fixture(scope="session")
def _schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("schema")


@pytest.fixture(autouse=True)
def _fresh_sqlite_from_template(monkeypatch: pytest.MonkeyPatch, _schema_dir: Path) -> None:
    """A new, empty SQLite database file opened by :class:`monitor.db.Database` gets a copy of
    an SQLite database brought to the newest revision by the real migrations once per test
    session, instead of running every migration again (a second of CPU, and hundreds of tests
    open a fresh database). Anything else (a database with tables, an old revision,
    PostgreSQL, an in-memory database, ``migrate`` imported and called directly) runs the real
    migrations."""
    import monitor.db

    real_migrate = monitor.db.migrate
    template = _schema_dir / "migrated.db"

    def migrate(engine, keystore=None):  # type: ignore[no-untyped-def]
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return real_migrate(engine, keystore)
        raw = engine.raw_connection()
        try:
            target = raw.driver_connection
            if target.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                return real_migrate(engine, keystore)
            if not template.exists():
                built = monitor.db.make_engine(f"sqlite:///{template}")
                try:
                    real_migrate(built)
                finally:
                    built.dispose()
            source = sqlite3.connect(template)
            try:
                source.backup(target)
            finally:
                source.close()
        finally:
            raw.close()
        return None

    monkeypatch.setattr(monitor.db, "migrate", migrate)


_REFERENCE_HASHES: dict[tuple[object, ...], object] = {}


@pytest.fixture(autouse=True)
def _reference_hashes_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Enrolment (:mod:`monitor.enrol`) hashes a photo it was given before, with the same
    arguments and hash algorithms, once per test session: many tests enrol the same generated
    or corpus photos, and a reference's variants (rotations, crops...) take seconds of CPU.
    The function is deterministic and its result immutable; errors are not remembered, and
    tests calling :func:`monitor.hashing.compute_reference_hashes` themselves get the real one.
    """
    import monitor.enrol
    from monitor import hashing

    real = monitor.enrol.compute_reference_hashes

    def compute_reference_hashes(data: bytes, **kwargs: object):  # type: ignore[no-untyped-def]
        algorithms = tuple((name, id(alg)) for name, alg in hashing._REGISTRY.items())
        key = (hashlib.sha256(data).digest(), len(data), tuple(sorted(kwargs.items())), algorithms)
        if key not in _REFERENCE_HASHES:
            _REFERENCE_HASHES[key] = real(data, **kwargs)
        return _REFERENCE_HASHES[key]

    monkeypatch.setattr(monitor.enrol, "compute_reference_hashes", compute_reference_hashes)
