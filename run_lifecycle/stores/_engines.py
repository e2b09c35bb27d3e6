"""From a URL or an application's engine to a backend and a way to reach its connections.

Everything that imports SQLAlchemy or a driver lives here and in the SQL
modules, imported only when a SQL store is opened, so ``memory://`` works with
no extra installed. Driver and connection failures become one ``StoreError``
that says what to do: install the extra, fix the URL, start the server.

Engines this module creates from a URL are tuned for the stores: SQLite gets
WAL, ``synchronous=NORMAL``, a 30 s busy timeout and driver-level autocommit
(the stores issue ``BEGIN IMMEDIATE`` themselves). An engine handed in by the
application is used exactly as configured and never disposed by the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import RunLifecycleError, StoreError
from ._memory import MemoryBackend

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["Target", "describe", "open_target", "reason"]

#: SQLite waits this long for another writer's lock before giving up (seconds).
SQLITE_BUSY_TIMEOUT_S = 30.0

_EXTRAS = {
    "sqlalchemy": "sqlite",
    "psycopg": "postgres",
    "aiosqlite": "async",
    "greenlet": "async",
}


def _missing(exc: ImportError, what: str) -> StoreError:
    module = (exc.name or "").split(".")[0]
    extra = _EXTRAS.get(module, "all")
    return StoreError(
        f"{what} needs the Python package {module or 'that was not found'};"
        f" install it with: pip install 'run-lifecycle[{extra}]'"
    )


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise _missing(exc, "a SQL store") from None
    return sqlalchemy


def describe(url: URL) -> str:
    """The URL as it can be shown to a user: the password hidden."""
    return url.render_as_string(hide_password=True)


def reason(exc: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's boilerplate."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class Target:
    """An opened store target: its backend, how to call operations on it, and how to close it."""

    def __init__(
        self,
        backend: Any,
        description: str,
        engine: Any = None,
        owns_engine: bool = False,
    ) -> None:
        self.backend = backend
        self.description = description
        self.engine = engine
        self.owns_engine = owns_engine
        #: The exceptions an operation may raise that must reach the caller as ``StoreError``.
        self.errors: tuple[type[BaseException], ...] = ()
        if engine is not None:
            from sqlalchemy.exc import SQLAlchemyError

            self.errors = (backend.driver_error, SQLAlchemyError)


def memory_target(url: str) -> Target:
    return Target(MemoryBackend(), url)


def _check_sync_engine(engine: Any, is_async: bool) -> tuple[str, str]:
    dialect = engine.dialect
    name, driver = dialect.name, dialect.driver
    wanted = {"sqlite": "aiosqlite" if is_async else "pysqlite", "postgresql": "psycopg"}.get(name)
    if wanted is None:
        raise StoreError(
            f"run-lifecycle stores run on SQLite and PostgreSQL, not {name};"
            " use sqlite:///PATH or postgresql://..."
        )
    if driver.removesuffix("_async") != wanted or bool(dialect.is_async) != is_async:
        plain = f"{name}+{wanted}" if name == "sqlite" else "postgresql+psycopg"
        raise StoreError(
            f"an {'async ' if is_async else ''}{name} store needs the {wanted} driver"
            f"{' through an AsyncEngine' if is_async else ''}, not {driver};"
            f" create the engine from a {plain}:// URL"
        )
    database = engine.url.database
    if name == "sqlite" and (
        database in (None, "", ":memory:") or "mode=memory" in str(engine.url.query)
    ):
        raise StoreError(
            "an in-memory SQLite database lives in one connection and cannot serve a store;"
            " use memory:// or a SQLite file"
        )
    return name, driver


def _tune_sqlite(engine: Any) -> None:
    from sqlalchemy import event

    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The stores issue BEGIN IMMEDIATE / COMMIT themselves: keep the driver out of it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    event.listen(getattr(engine, "sync_engine", engine), "connect", _connect)


def _url(text: str, is_async: bool) -> URL:
    _sqlalchemy()
    from sqlalchemy.engine import make_url

    try:
        url = make_url(text)
    except Exception:
        raise StoreError(
            f"{text!r} is not a store URL; use memory://, sqlite:///PATH or"
            " postgresql://USER@HOST:PORT/DB"
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg", "psycopg_async"):
            raise StoreError(
                f"PostgreSQL stores use psycopg 3, not {driver}; write the URL as postgresql://..."
            )
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        wanted = "aiosqlite" if is_async else "pysqlite"
        if driver not in ("", wanted):
            raise StoreError(
                f"{'async ' if is_async else ''}SQLite stores use {wanted}, not {driver}"
            )
        return url.set(drivername="sqlite+aiosqlite" if is_async else "sqlite")
    raise StoreError(
        f"unknown store URL scheme {url.drivername!r}; use memory://, sqlite:///PATH"
        " or postgresql://USER@HOST:PORT/DB"
    )


def _create(url: URL, is_async: bool) -> Any:
    sqlalchemy = _sqlalchemy()
    sqlite = url.get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {}
    if sqlite:
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    try:
        if is_async:
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(url, **kwargs)
        else:
            engine = sqlalchemy.create_engine(url, **kwargs)
    except ImportError as exc:
        raise _missing(exc, f"the store {describe(url)}") from None
    except RunLifecycleError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot open the store {describe(url)}: {reason(exc)}") from None
    return engine


def open_target(target: Any, *, is_async: bool, schema: str | None) -> Target:
    """A ``Target`` for a URL string or an application's (Async)Engine."""
    if isinstance(target, str):
        if target.split(":", 1)[0].lower() == "memory":
            if schema is not None:
                raise StoreError("schema= selects a PostgreSQL schema; a memory store has none")
            return memory_target(target)
        url = _url(target, is_async)
        engine = _create(url, is_async)
        owns = True
    else:
        sqlalchemy = _sqlalchemy()
        if is_async:
            try:
                from sqlalchemy.ext.asyncio import AsyncEngine
            except ImportError as exc:
                raise _missing(exc, "an async store") from None
            kind: type = AsyncEngine
        else:
            kind = sqlalchemy.engine.Engine
        if not isinstance(target, kind):
            raise StoreError(
                f"open_{'async_' if is_async else ''}store takes a URL string or a SQLAlchemy"
                f" {kind.__name__}, got {type(target).__name__}"
            )
        engine, owns = target, False
    sync_engine = getattr(engine, "sync_engine", engine)
    try:
        name, _ = _check_sync_engine(sync_engine, is_async)
    except StoreError:
        if owns:
            sync_engine.dispose()
        raise
    if schema is not None and name != "postgresql":
        raise StoreError("schema= selects a PostgreSQL schema; SQLite stores have none")
    if schema is not None and (not isinstance(schema, str) or not schema.strip()):
        raise StoreError(f"schema= must be a non-empty schema name, got {schema!r}")
    if owns and name == "sqlite":
        _tune_sqlite(engine)
    from ._sql import SQLBackend

    backend = SQLBackend(name, sync_engine.dialect.loaded_dbapi, schema)
    return Target(backend, describe(sync_engine.url), engine, owns)
