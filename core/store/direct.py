"""A hot path's statements straight on SQLite's driver (`Database.direct`): SQLAlchemy Core statements compiled once
(`Statements`), run on the sqlite3 connection inside the grouped write (`Direct`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Executable
from sqlalchemy.engine import Dialect
from sqlmodel.ext.asyncio.session import AsyncSession

# (SQL, its parameters' names in order, their bind processors, the values of its literals)
_Compiled = tuple[str, list[str], dict[str, Any], dict[str, Any]]
MAX_STATEMENTS = 512  # statements are built once; a caller building them per call is capped


class Statements:
    """Statements built once (a module's constant or an lru_cache'd builder: kept by identity, and held, so an id
    is never reused), each compiled for the store's dialect on first use."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._compiled: dict[tuple[int, frozenset[str]], tuple[Executable, _Compiled]] = {}

    def compiled(self, statement: Executable, params: Mapping[str, Any]) -> _Compiled:
        key = (id(statement), frozenset(params))
        found = self._compiled.get(key)
        if found is None or found[0] is not statement:
            compiled = cast(Any, statement).compile(dialect=self.dialect, column_keys=list(params))
            names = list(compiled.positiontup or ())
            binds = compiled.binds  # by the names the SQL gives its parameters
            if any(binds[name].expanding for name in names if name in binds):
                raise ValueError("Direct runs no IN (...) of a list: use the session")
            # what the statement fixes itself (a CASE's values); anything else must be given: no column defaults
            # are applied here (SQLAlchemy applies them in its execution context, which this skips)
            fixed = {name: value for name, value in compiled.construct_params(_check=False).items()
                     if name not in params and name in binds and not binds[name].required and value is not None}
            missing = [name for name in names if name not in params and name not in fixed]
            if missing:
                raise ValueError(f"Direct statement without a value for {', '.join(missing)}")
            processors = {name: fn for name, fn in compiled._bind_processors.items() if name in names}
            if len(self._compiled) >= MAX_STATEMENTS:
                self._compiled.clear()
            found = self._compiled[key] = (statement, (compiled.string, names, processors, fixed))
        return found[1]


class Direct:
    """The statements of one write, for hot paths: SQLAlchemy Core statements compiled once, then on SQLite run
    straight on the driver's connection, on the event loop (a statement through SQLAlchemy's execution layer costs
    0.1-0.3 ms of loop CPU, on sqlite3 a few microseconds). Parameters go through SQLAlchemy's own bind processors,
    so a value is stored exactly as the ORM stores it (a time, a JSON column); every value is given (no column
    default is applied) and no parameter is a list (no IN). Rows come back as the driver gives them: read only
    columns stored as they are read (text, integers). Elsewhere (PostgreSQL, inside a unit of work) the same calls
    run through the session's connection."""

    def __init__(self, statements: Statements, raw: sqlite3.Connection | None, session: AsyncSession | None
                 ) -> None:
        self._statements = statements
        self._raw = raw
        self._session = session

    async def rows(self, statement: Executable, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if self._raw is None:
            assert self._session is not None
            result = await (await self._session.connection()).execute(statement, params)
            return [tuple(row) for row in result.all()] if result.returns_rows else []
        sql, names, processors, fixed = self._statements.compiled(statement, params)
        bound = []
        for name in names:
            value = params[name] if name in params else fixed[name]
            bound.append(processors[name](value) if name in processors else value)
        return self._raw.execute(sql, bound).fetchall()

    async def first(self, statement: Executable, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        found = await self.rows(statement, params)
        return found[0] if found else None
