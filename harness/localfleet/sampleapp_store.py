"""The sample app's state: an append-only JSON-lines log of orders (fsync per commit), and its primacy.

The log is the replication stream too: a primary ships its lines in order, and a position is a count
of lines. An order is keyed by (stream, seq); a later line for the same key replaces the earlier one
(a replica takes its primary's version). A torn last line, left by a crash mid-write, is cut off at
open. Primacy (role, epoch, why this node was deposed) lives in a state file replaced atomically; its
rules are in sampleapp's docstring.
"""

import bisect
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

LOG = "orders.jsonl"
STATE = "state.json"
PRIMARY, REPLICA = "primary", "replica"
FENCED = "fenced: cannot confirm primacy"
Order = dict[str, Any]
log = logging.getLogger("orders")


def _fsync_dir(folder: Path) -> None:
    """Make a file's creation or rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """The orders of one instance, rebuilt from its log at open; the caller serialises access."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.log: list[Order] = []
        self.committed_at: list[float] = []  # monotonic commit time per line; 0 for lines read at open
        self.orders: dict[str, dict[int, Order]] = {}
        self.seqs: dict[str, list[int]] = {}  # per stream, sorted
        path = folder / LOG
        data = path.read_bytes() if path.exists() else b""
        good = 0
        for line in data.splitlines(keepends=True):
            try:
                order = json.loads(line)
            except ValueError:
                break
            if not line.endswith(b"\n"):
                break
            self._index(order, 0.0)
            good += len(line)
        if good < len(data):
            with path.open("r+b") as torn:
                torn.truncate(good)
        self.file = path.open("ab")
        _fsync_dir(folder)

    @property
    def position(self) -> int:
        return len(self.log)

    def _index(self, order: Order, committed_at: float) -> None:
        stream, seq = order["stream"], order["seq"]
        by_seq = self.orders.setdefault(stream, {})
        if seq not in by_seq:
            bisect.insort(self.seqs.setdefault(stream, []), seq)
        by_seq[seq] = order
        self.log.append(order)
        self.committed_at.append(committed_at)

    def append(self, *orders: Order) -> None:
        """Commit orders: write their lines, fsync once, then index them."""
        self.file.write(b"".join(json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in orders))
        self.file.flush()
        os.fsync(self.file.fileno())
        now = time.monotonic()
        for order in orders:
            self._index(order, now)

    def get(self, stream: str, seq: int) -> Order | None:
        return self.orders.get(stream, {}).get(seq)

    def page(self, stream: str, since: int, limit: int) -> tuple[list[Order], int | None]:
        """Up to `limit` orders with seq > since, by seq, and the seq to continue from (None at the end)."""
        seqs = self.seqs.get(stream, [])
        start = bisect.bisect_right(seqs, since)
        chosen = seqs[start : start + limit]
        more = start + limit < len(seqs)
        return [self.orders[stream][s] for s in chosen], chosen[-1] if more else None

    def last_seqs(self) -> dict[str, int]:
        return {stream: seqs[-1] for stream, seqs in sorted(self.seqs.items())}

    def load_state(self) -> dict[str, Any] | None:
        path = self.folder / STATE
        return json.loads(path.read_text()) if path.exists() else None

    def save_state(self, state: dict[str, Any]) -> None:
        tmp = self.folder / f"{STATE}.tmp"
        with tmp.open("w") as out:
            json.dump(state, out)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.folder / STATE)
        _fsync_dir(self.folder)

    def close(self) -> None:
        self.file.close()


class Primacy:
    """Role, epoch and fencing of one instance, saved in the state file; the caller serialises access."""

    def __init__(self, store: Store, first_role: str, has_peers: bool, fence_timeout: float) -> None:
        self.store = store
        self.fence_timeout = fence_timeout
        state = store.load_state() or {"role": first_role, "epoch": int(first_role == PRIMARY)}
        self.role: str = state["role"]
        self.epoch: int = state["epoch"]
        self.deposed: str | None = state.get("deposed")
        # When peers last confirmed this primary (monotonic); None: not since start; inf: no need.
        self.confirmed_at: float | None = None if has_peers else math.inf
        self._save()

    def _save(self) -> None:
        self.store.save_state({"role": self.role, "epoch": self.epoch, "deposed": self.deposed})

    def refusal(self) -> str | None:
        """Why this node refuses writes now, or None."""
        if self.role != PRIMARY:
            return "not primary"
        timeout = self.fence_timeout
        if self.confirmed_at is None or (timeout and time.monotonic() - self.confirmed_at > timeout):
            return FENCED
        return None

    def fence_reason(self) -> str | None:
        return self.deposed if self.role == REPLICA else self.refusal()

    def observe(self, peer: str, epoch: int, role: object) -> bool:
        """Adopt a higher epoch; step down on meeting one, or another primary at ours. True on a change."""
        conflict = epoch == self.epoch and role == PRIMARY == self.role
        if epoch <= self.epoch and not conflict:
            return False
        if self.role == PRIMARY:
            how = "is also primary at" if conflict else "holds"
            self.role, self.deposed = REPLICA, f"deposed: {peer} {how} epoch {epoch}"
            log.warning("%s (this node had epoch %d): now a replica", self.deposed, self.epoch)
        self.epoch = epoch
        self._save()
        return True

    def confirm(self) -> None:
        """A round of status polls was answered and showed no higher epoch."""
        if self.role == PRIMARY:
            if self.confirmed_at is None:
                log.warning("primacy at epoch %d confirmed by peers", self.epoch)
            self.confirmed_at = time.monotonic()

    def promote(self, wanted: int) -> bool:
        """Become a writable primary at the next epoch (or `wanted` if higher); False if already one."""
        if self.refusal() is None and wanted <= self.epoch:
            return False
        self.role, self.deposed, self.confirmed_at = PRIMARY, None, math.inf
        self.epoch = max(self.epoch + 1, wanted)
        self._save()
        log.warning("promoted to primary at epoch %d", self.epoch)
        return True
