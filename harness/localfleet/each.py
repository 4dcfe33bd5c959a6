"""Steps done in every cluster at once: a cluster's own steps wait on its API server, not on the others';
and waits until each of several checks holds."""

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def at_once(action: Callable[[T], None], items: Sequence[T]) -> None:
    """`action` on every item, each in a thread of its own; once all have ended, the first failure (in the
    items' order) is raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        futures = [pool.submit(action, item) for item in items]
    for future in futures:
        future.result()


def unmet_after(
    checks: Mapping[str, Callable[[], bool]], deadline_s: float, interval_s: float = 0.05
) -> list[str]:
    """Poll every check until it holds (one that held is not asked again), for at most deadline_s; what
    still did not hold then (empty: every check held)."""
    waiting, deadline = dict(checks), time.monotonic() + deadline_s
    while waiting:
        waiting = {what: check for what, check in waiting.items() if not check()}
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(interval_s)
    return list(waiting)
