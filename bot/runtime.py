"""How a Shepherd process sets up its interpreter for serving: the garbage collector and the child watcher.

Both measured on bench/tasks.py (100 demo agents at once, 200,000 output lines; bench/README.md):

- The garbage collector. A served process holds a large heap that lives as long as it does (the modules, the
  app, the store's engine and compiled statements), and every full collection walked all of it: four of them
  took half a second of event-loop time in one run, each a pause of 130 ms, and the young generation's 1,200
  collections another 0.7 s. After start-up the heap made so far is frozen (`gc.freeze`: the collector leaves it
  out from then on) and the young generation is collected every 10,000 allocations instead of 700: most of what
  a request or an output line allocates is freed by its reference count before then.
- The child watcher. On Python 3.11 asyncio waits for each child process (an agent, a git) on a thread of its own,
  started per child; with pidfds (Linux 5.3 and later) the event loop itself is told when a child ends. Python
  3.12 chooses that by itself.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import warnings

YOUNG_THRESHOLD = 10_000  # allocations between collections of the young generation (CPython's default: 700)


def watch_children_with_pidfds() -> bool:
    """Before the event loop starts: asyncio learns of child exits from pidfds where the kernel has them.
    Returns whether it does now."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return sys.version_info >= (3, 12)
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # an older kernel, or a seccomp profile that refuses the call: the threaded watcher stays
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.get_event_loop_policy().set_child_watcher(asyncio.PidfdChildWatcher())
    return True


def settle_heap() -> None:
    """Once the process has started serving: what start-up built is left out of later collections."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
