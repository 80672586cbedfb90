"""CPU pinning for measurements on few cores: `gptzoo serve --cpus 0` and `gptzoo loadtest --cpus 1` keep the server
and the load generator off each other's cores, so a 2-core machine measures the server, not the client.

A CPU list uses taskset's syntax ("0", "0,2", "0-3,6") and must name CPUs this process may use now
(os.sched_getaffinity). Linux only: elsewhere pinning is refused with a clear error, never silently skipped.

Stdlib only: the serve CLI and the load generator both import it, neither pulls in the other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from gptzoo.zoo.errors import BadValue

_ITEM = re.compile(r"(\d+)(?:-(\d+))?")
MAX_CPU = 1 << 16  # a typo such as 0-99999999 is refused instead of building a huge set


class CpuListError(BadValue):
    """A CPU list that cannot be used: bad syntax, CPUs this process may not run on, or no pinning on this OS."""


def parse_cpus(text: str) -> frozenset[int]:
    """The CPUs of a list such as "0", "1,3" or "0-3,6" (syntax only; `check_cpus` also checks availability)."""
    cpus: set[int] = set()
    for item in str(text).replace(" ", "").split(","):
        m = _ITEM.fullmatch(item)
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, -1)
        if not m or hi < lo or hi > MAX_CPU:
            raise CpuListError(f"invalid CPU list {text!r}: expected CPU numbers and ranges such as 0, 1,3 or 0-3")
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def available_cpus() -> frozenset[int]:
    """The CPUs this process may run on now (a container's cpuset, taskset, an earlier pin)."""
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        raise CpuListError("pinning to CPUs is not supported on this system (it needs Linux's sched_setaffinity)")
    return frozenset(os.sched_getaffinity(0))


def check_cpus(text: str) -> frozenset[int]:
    """Parses a CPU list and checks that this process may use every CPU in it."""
    cpus = parse_cpus(text)
    have = available_cpus()
    if not cpus <= have:
        raise CpuListError(f"CPU list {text!r} names CPU(s) {format_cpus(cpus - have)}, which this process may not "
                           f"use (available: {format_cpus(have)})")
    return cpus


def pin(cpus: Iterable[int]) -> None:
    """Pins this process to `cpus`: every thread it has now, and so every thread and child process it starts later
    (both inherit the mask). sched_setaffinity(0) alone would pin only the calling thread."""
    cpus = frozenset(cpus)
    available_cpus()  # the unsupported-system error
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile
        except OSError as e:
            raise CpuListError(f"cannot pin to CPUs {format_cpus(cpus)}: {e.strerror or e}") from None


def format_cpus(cpus: Iterable[int]) -> str:
    """taskset's compact form: {0, 1, 2, 5} -> "0-2,5"."""
    xs = sorted(set(cpus))
    runs: list[str] = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        runs.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(runs)
