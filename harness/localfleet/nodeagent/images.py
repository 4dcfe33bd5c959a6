"""The image catalogue: no registry is reachable, so an image name maps to what runs for it.

The sample app's image runs our sample app, a stress image (polinux/stress, progrium/stress,
alexeiled/stress-ng, fleetdrill.io/stress) our stress process with the pod's stress options; any
other image runs an idle process that is Running and Ready, so `kubectl create deployment
--image=nginx` works. The pod's own command wins when the catalogue can run it (a real program on
this machine); otherwise the idle process runs and the container's status message says so.
"""

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

SAMPLE_APP_IMAGE = "fleetdrill.io/orders"
STRESS_IMAGES = ("polinux/stress", "progrium/stress", "alexeiled/stress-ng", "fleetdrill.io/stress")
STRESS_PROGRAMS = ("stress", "stress-ng")
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
    if any(_repository(image) in (name, f"docker.io/{name}") for name in STRESS_IMAGES):
        return _stress(image, command, args)
    if command and shutil.which(command[0]):
        return Resolved([*command, *args])
    if command:
        return Resolved(IDLE, f"image {image}: {command[0]!r} is not available here; running an idle process")
    return Resolved(IDLE, f"image {image} is not in the catalogue; running an idle process")


def _stress(image: str, command: list[str], args: list[str]) -> Resolved:
    """A stress image runs harness.localfleet.stress with the options given to stress or stress-ng."""
    if command and Path(command[0]).name not in STRESS_PROGRAMS:
        return Resolved(IDLE, f"image {image}: only stress and stress-ng run here, not {command[0]!r}")
    return Resolved([sys.executable, "-m", "harness.localfleet.stress", *command[1:], *args])
