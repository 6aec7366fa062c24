"""Database access: engine creation, migrations (Alembic) and sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from monitor.errors import MonitorError
from monitor.paths import ensure_private_file
from monitor.secrets import KeyStore, attach, default_key_path, encrypted_rows_exist

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite, create the file owner-only and turn on WAL and FKs.

    SQLite allows one writer at a time: a writer that finds the database locked waits up to 30 s
    (``busy_timeout``) instead of failing, so the scheduler and a CLI command can both write."""
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


def migrate(engine: Engine, keystore: KeyStore | None = None) -> None:
    """Bring the schema up to the newest Alembic revision.

    ``keystore`` is handed to migrations that encrypt stored values (0003)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["keystore"] = keystore
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return
    # SQLite alters a table by copying it and dropping the old one; with foreign keys on, that
    # DROP would cascade and delete every row that refers to the table (a subject's references,
    # scans, matches...). So migrations run with foreign keys off (the pragma only takes effect
    # outside a transaction), and are checked before the transaction commits.
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise MonitorError(
                        f"upgrading the database failed: broken references {broken[:5]}; "
                        "nothing was changed"
                    )
        finally:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()


def _holds_encrypted_references(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            return encrypted_rows_exist(conn)
    except DBAPIError:  # a new database: no tables yet
        return False


class Database:
    """An engine plus a session factory. ``with db.session() as s:`` commits on success.

    Reference hashes are encrypted with the key in ``key_file`` (default: ``<data folder>.key``
    beside the folder holding an SQLite database; see :mod:`monitor.secrets`). The key is
    created on first use, and never replaced while the database holds values it encrypted.
    """

    def __init__(
        self, url: str, *, upgrade: bool = True, key_file: str | Path | None = None
    ) -> None:
        self.url = url
        self.engine = make_engine(url)
        path = Path(key_file).expanduser() if key_file else default_key_path(url)
        self.keystore = KeyStore(path, may_create=not _holds_encrypted_references(self.engine))
        attach(self.engine.dialect, self.keystore)
        if upgrade:
            migrate(self.engine, self.keystore)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._factory() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()
