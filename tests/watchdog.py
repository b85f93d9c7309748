"""A stuck test says where it is stuck: when one test runs past WATCH_S, every asyncio task's stack (what each
coroutine is awaiting) and every thread's stack go to stderr, once. pytest-timeout (pyproject.toml) then
fails that test, so a hang costs minutes and leaves its evidence in the log instead of stalling CI."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

WATCH_S = float(os.environ.get("SHEPHERD_TEST_WATCH_S", "120"))

_loops: set[asyncio.AbstractEventLoop] = set()
_current: dict[str, Any] = {"start": None, "name": "", "told": False}
_run_forever = asyncio.BaseEventLoop.run_forever


def _tracking_run_forever(self: asyncio.BaseEventLoop) -> None:
    _loops.add(self)
    try:
        _run_forever(self)
    finally:
        _loops.discard(self)


def _awaiting(coro: Any) -> Iterator[Any]:
    """The frames of a coroutine and of what it awaits, down to where it waits."""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            yield frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)


def _tell() -> None:
    out = sys.__stderr__
    if out is None:
        return
    print(f"\n=== watchdog: {_current['name']} has run for over {WATCH_S:.0f} s; its asyncio tasks:", file=out)
    for loop in list(_loops):
        try:
            tasks = asyncio.all_tasks(loop)
        except RuntimeError:
            continue
        for task in tasks:
            print(f"--- {task.get_name()}", file=out)
            for frame in _awaiting(task.get_coro()):
                print(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}", file=out)
    print("=== and its threads:", file=out)
    faulthandler.dump_traceback(file=out)
    out.flush()


def _watch() -> None:
    while True:
        time.sleep(5)
        start = _current["start"]
        if start is not None and not _current["told"] and time.monotonic() - start > WATCH_S:
            _current["told"] = True
            _tell()


def install() -> None:
    asyncio.BaseEventLoop.run_forever = _tracking_run_forever  # type: ignore[method-assign]
    threading.Thread(target=_watch, name="test-watchdog", daemon=True).start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _current.update(start=time.monotonic(), name=item.nodeid, told=False)
    yield
    _current.update(start=None)
