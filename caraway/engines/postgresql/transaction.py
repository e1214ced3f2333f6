"""The application's own database handle, as a DB-API cursor in its open transaction.

``apply_async(..., connection=conn)`` may be given a psycopg 3 or psycopg2 connection,
Django's ``django.db.connection``, a SQLAlchemy ``Connection`` or ``Session``: all lead to a
DB-API connection whose cursor takes ``%s`` parameters. Nothing here imports those
libraries; each is recognised by what it offers.
"""

from __future__ import annotations

from typing import Any

from caraway.exceptions import ImproperlyConfigured


def dbapi_cursor(handle: Any) -> Any:
    """A cursor on the DB-API connection behind ``handle``, inside its transaction."""
    connection = dbapi_connection(handle)
    cursor = getattr(connection, "cursor", None)
    if not callable(cursor):
        raise ImproperlyConfigured(
            f"cannot send a task in the transaction of {handle!r}: expected a psycopg"
            " connection, Django's connection, or a SQLAlchemy Connection or Session on"
            " PostgreSQL"
        )
    return cursor()


def dbapi_connection(handle: Any) -> Any:
    """Unwrap a SQLAlchemy Session (``get_bind``) or Connection (``exec_driver_sql``) to the
    driver's connection; anything else is taken as a DB-API connection already."""
    session = callable(getattr(handle, "get_bind", None))
    if session and callable(getattr(handle, "connection", None)):
        handle = handle.connection()  # its Connection, in the session's transaction
    if callable(getattr(handle, "exec_driver_sql", None)):
        return handle.connection.dbapi_connection  # the pooled driver connection
    return handle
