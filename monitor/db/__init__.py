"""Database access: engine creation, migrations (Alembic) and sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from monitor.paths import ensure_private_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite, create the file owner-only and turn on WAL and FKs."""
    sa_url = make_url(url)
    kwargs: dict[str, object] = {}
    if sa_url.get_backend_name() == "sqlite":
        db_path = sa_url.database
        if db_path and db_path != ":memory:":
            ensure_private_file(Path(db_path).expanduser())
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_engine(sa_url, **kwargs)
    if sa_url.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """An engine plus a session factory. ``with db.session() as s:`` commits on success."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if upgrade:
            migrate(self.engine)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._factory() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()
