"""Work that runs in the background between start() and stop(), as a context manager."""

from __future__ import annotations

from typing import Self

from harness.errors import FleetDrillError


class Background:
    """A context manager over start() and stop(): a stop that fails raises, or, when the block is already
    leaving with an error, becomes a note on that error (naming `what`), which then carries on."""

    what = "the background work"

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.stop()
        except FleetDrillError as error:
            if exc is None:
                raise
            exc.add_note(f"while stopping {self.what}: {error}")
