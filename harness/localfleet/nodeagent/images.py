"""The image catalogue: no registry is reachable, so an image name maps to what runs for it.

The sample app's image runs our sample app; any other image runs an idle process that is Running
and Ready, so `kubectl create deployment --image=nginx` works. The pod's own command wins when the
catalogue can run it (a real program on this machine); otherwise the idle process runs and the
container's status message says so.
"""

import shutil
import sys
from dataclasses import dataclass

SAMPLE_APP_IMAGE = "fleetdrill.io/orders"
IDLE = [sys.executable, "-c", "import signal; signal.pause()"]


@dataclass(frozen=True)
class Resolved:
    """What to exec for a container, and a note when it is not what the pod asked for."""

    argv: list[str]
    note: str = ""


def _repository(image: str) -> str:
    """The image name without tag or digest."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def resolve(image: str, command: list[str], args: list[str]) -> Resolved:
    """The argv for a container of `image` with the pod's command and args."""
    if _repository(image) == SAMPLE_APP_IMAGE:
        return Resolved([sys.executable, "-m", "harness.localfleet.sampleapp", *args])
    if command and shutil.which(command[0]):
        return Resolved([*command, *args])
    if command:
        return Resolved(IDLE, f"image {image}: {command[0]!r} is not available here; running an idle process")
    return Resolved(IDLE, f"image {image} is not in the catalogue; running an idle process")
