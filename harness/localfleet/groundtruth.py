"""The fleet's ground-truth log: what really happened, as JSON lines in the fleet folder.

Written by the global load balancer (health and serving changes, every global request with the cluster
that served it, the sample app's replication positions) and by the supervisor (every fault the fleet
applied: clusters lost and returned, partitions, frozen nodes), with monotonic and wall-clock times,
so tests can check the harness's measurements against it.
"""

import json
import time
from pathlib import Path

FILE = "ground-truth.jsonl"


def line(event: str, **fields: object) -> str:
    """One event as a JSON line, stamped now."""
    return json.dumps({"mono": time.monotonic(), "wall": time.time(), "event": event, **fields}) + "\n"


def record(path: Path, event: str, **fields: object) -> None:
    """Append one event (one write of one line, in append mode: safe across processes)."""
    with path.open("a") as log:
        log.write(line(event, **fields))


class Batch:
    """Events kept in memory and appended together by flush: for events too frequent for a write each."""

    def __init__(self, path: Path) -> None:
        self.path, self.lines = path, []

    def add(self, event: str, **fields: object) -> None:
        self.lines.append(line(event, **fields))

    def flush(self) -> None:
        """Append what was added since the last flush, in one write."""
        if self.lines:
            text, self.lines = "".join(self.lines), []
            with self.path.open("a") as log:
                log.write(text)


def read(path: Path) -> list[dict]:
    """Every event logged so far (none when nothing was)."""
    if not path.exists():
        return []
    return [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
