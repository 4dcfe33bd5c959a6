"""Steps done in every cluster at once: a cluster's own steps wait on its API server, not on the others'."""

from collections.abc import Callable, Sequence
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
