"""Database access: engine creation, migrations (Alembic) and sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from monitor.errors import MonitorError
from monitor.paths import ensure_private_file
from monitor.secrets import KeyStore, attach, default_key_path, encrypted_rows_exist

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseUnavailable(MonitorError):
    """The database URL is wrong, its driver is missing, or the server cannot be reached.

    The message is one line and never holds the URL's password."""


def parse_database_url(url: str) -> URL:
    """``url`` as a SQLAlchemy URL, or :class:`DatabaseUnavailable` (the URL is not echoed:
    it may hold a password)."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseUnavailable(
            "[database] url is not a database URL (expected e.g. "
            "postgresql+psycopg://user@host:5432/name, or empty for SQLite in the data folder)"
        ) from exc


def shown_url(url: URL) -> str:
    """The URL for messages, with any password masked."""
    return url.render_as_string(hide_password=True)


def check_sqlite_folder(url: str) -> None:
    """Refuse an SQLite URL whose folder does not exist (a typo would otherwise start a new,
    empty database and scans would silently find no one)."""
    sa_url = parse_database_url(url)
    if sa_url.get_backend_name() != "sqlite":
        return
    db_path = sa_url.database
    if not db_path or db_path == ":memory:" or db_path.startswith("file:"):
        return
    folder = Path(db_path).expanduser().parent
    if not folder.is_dir():
        raise DatabaseUnavailable(
            f"the folder of the SQLite database {db_path} does not exist ({folder}); create it, "
            "or correct [database] url (a new, empty database is not made there)"
        )


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def describe_db_error(exc: BaseException, url: URL | None = None) -> str:
    """One line for a database error: no SQL, no parameters, no password."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, MonitorError):  # raised while binding a value (e.g. the key is wrong)
        return str(orig)
    reason = _one_line(exc)
    if url is not None and url.password:
        reason = reason.replace(str(url.password), "***")
    return reason


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite, create the file owner-only and turn on WAL and FKs.

    SQLite allows one writer at a time: a writer that finds the database locked waits up to 30 s
    (``busy_timeout``) instead of failing, so the scheduler and a CLI command can both write.
    Deleted rows are overwritten (``secure_delete``), so an erased person's data does not stay
    in free pages. Statement parameters are never put into error messages (``hide_parameters``):
    they can hold decrypted reference hashes."""
    sa_url = parse_database_url(url)
    kwargs: dict[str, object] = {"hide_parameters": True}
    if sa_url.get_backend_name() == "sqlite":
        db_path = sa_url.database
        if db_path and db_path != ":memory:":
            ensure_private_file(Path(db_path).expanduser())
        kwargs["connect_args"] = {"timeout": 30}
    try:
        engine = create_engine(sa_url, **kwargs)
    except NoSuchModuleError as exc:
        raise DatabaseUnavailable(
            f"[database] url names an unknown kind of database ({sa_url.drivername!r}); "
            "use sqlite:///PATH or postgresql+psycopg://..."
        ) from exc
    except ImportError as exc:
        raise DatabaseUnavailable(
            f"the database driver for {sa_url.drivername!r} is not installed "
            f"({getattr(exc, 'name', None) or exc}); use postgresql+psycopg://... (installed "
            "with this tool) or SQLite"
        ) from exc
    if sa_url.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

    return engine


def _check_connection(engine: Engine) -> None:
    """Connect once, so an unreachable server is one clear error, not a traceback later."""
    url = engine.url
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        reason = describe_db_error(exc, url)
        if url.get_backend_name() == "postgresql":
            where = f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"
            raise DatabaseUnavailable(f"could not connect to {where}: {reason}") from None
        if url.get_backend_name() == "sqlite":
            raise DatabaseUnavailable(
                f"could not open the SQLite database {url.database}: {reason}"
            ) from None
        raise DatabaseUnavailable(
            f"could not connect to the database at {shown_url(url)}: {reason}"
        ) from None


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
            if engine.dialect.name == "postgresql":  # workers starting together: one at a time
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7316204415)")
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
        _check_connection(self.engine)
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

    def scrub(self) -> bool:
        """After an erasure, leave no copy of the erased rows in the database files.

        SQLite overwrites deleted rows with zeros (``secure_delete``, on for every connection),
        but the write-ahead log (``-wal``) keeps the earlier versions of the pages until a
        checkpoint, and its file is reused, not cleared. A TRUNCATE checkpoint writes the log
        back and empties its file. (No VACUUM: with ``secure_delete`` the erased values are not
        in free pages; ``tests/test_erasure.py`` checks every byte.) Returns False when another
        process still reads the database, so the log could not be emptied now: SQLite empties
        it when the last connection closes. PostgreSQL keeps dead row versions until its own
        VACUUM: that is the server's business."""
        if self.engine.dialect.name != "sqlite":
            return True
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
        return not busy or busy[0] == 0

    def dispose(self) -> None:
        self.engine.dispose()
