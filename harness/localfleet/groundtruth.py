"""The fleet's ground-truth log: what really happened, as JSON lines in the fleet folder.

Written by the global load balancer (health and serving changes) and by the supervisor (every fault
the fleet applied: clusters lost and returned, partitions, frozen nodes), with monotonic and
wall-clock times, so tests can check the harness's measurements against it.
"""

import json
import time
from pathlib import Path

FILE = "ground-truth.jsonl"


def record(path: Path, event: str, **fields: object) -> None:
    """Append one event (one write of one line, in append mode: safe across processes)."""
    line = json.dumps({"mono": time.monotonic(), "wall": time.time(), "event": event, **fields}) + "\n"
    with path.open("a") as log:
        log.write(line)


def read(path: Path) -> list[dict]:
    """Every event logged so far (none when nothing was)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
