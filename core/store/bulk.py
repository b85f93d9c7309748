"""Many rows of one table written at once, the fastest way each store has: PostgreSQL's COPY (asyncpg's
copy_records_to_table, binary), SQLite's executemany straight on the driver.

The output of a hundred agents is a stream of rows (bench/tasks.py: 200,000 lines). PostgreSQL took them at about
11,000 rows a second through executemany (a Bind and an Execute per row, the executor started per row) on this
2-core machine while the agents ran: the turns ending waited seconds for the output before them to be stored. COPY
takes the rows as one stream."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection


def each(rows: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]] | Mapping[str, Any]:
    """A statement's parameters for `rows`: the one row alone (a plain execute), or all of them (executemany)."""
    return rows[0] if len(rows) == 1 else rows


_COMPILED: dict[tuple[str, str, str, tuple[str, ...]], tuple[str, tuple[int, ...] | None, list[Any]]] = {}


async def insert_rows(conn: AsyncConnection, table: Table, columns: tuple[str, ...],
                      rows: Sequence[tuple[Any, ...]]) -> None:
    """`rows` (values in the order of `columns`) inserted into `table` in the connection's transaction, which must
    have begun (a statement run on it first): COPY joins the transaction asyncpg holds; without one it would commit
    by itself, so the rows go through executemany instead."""
    if not rows:
        return
    if conn.dialect.driver == "asyncpg":
        raw = await conn.get_raw_connection()
        if getattr(raw.dbapi_connection, "_started", False):  # SQLAlchemy's adapter began asyncpg's transaction
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                table.name, schema_name=table.schema, columns=list(columns), records=rows)
            return
    await conn.exec_driver_sql(*_driver_executemany(conn.dialect, table, columns, rows))


def _driver_executemany(dialect: Dialect, table: Table, columns: tuple[str, ...],
                        rows: Sequence[tuple[Any, ...]]) -> tuple[str, Any]:
    """The INSERT as the driver's own executemany: compiled once per dialect and paramstyle, each value converted by
    its column type's own bind processor (once per distinct value: the lines of one read share their time), nothing
    else done per row. Through SQLAlchemy's executemany each row paid for its parameters to be built and processed
    again (about 20 µs a row in a profile of 100 tasks x 2000 lines)."""
    key = (dialect.name, dialect.paramstyle, table.name, columns)
    compiled = _COMPILED.get(key)
    if compiled is None:
        statement = insert(table).inline().compile(dialect=dialect, column_keys=list(columns))
        order = (tuple(columns.index(name) for name in statement.positiontup)
                 if statement.positional and statement.positiontup else None)
        processors = [table.c[name].type._cached_bind_processor(dialect) for name in columns]
        compiled = _COMPILED[key] = (str(statement), order, processors)
    sql, order, processors = compiled
    converting = [(at, processor) for at, processor in enumerate(processors) if processor is not None]
    if converting:
        seen: list[dict[Any, Any]] = [{} for _ in converting]
        converted: list[tuple[Any, ...]] = []
        for row in rows:
            values = list(row)
            for (at, processor), known in zip(converting, seen, strict=True):
                value = values[at]
                values[at] = known[value] if value in known else known.setdefault(value, processor(value))
            converted.append(tuple(values))
        rows = converted
    if order is None:  # a named paramstyle
        return sql, [dict(zip(columns, row, strict=True)) for row in rows]
    if order == tuple(range(len(columns))):
        return sql, list(rows)
    return sql, [tuple(row[at] for at in order) for row in rows]
