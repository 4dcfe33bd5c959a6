"""Each container's own temporary folder, its TMPDIR.

A container runtime gives every container a /tmp of its own that goes with it. Our containers share the
machine's filesystem, so what they wrote to /tmp outlived the fleet (Velero's node agent leaves a file of a
backup pod's logs there for every file-system backup). Each container now gets a folder of its own as
TMPDIR, removed with its pod. It is short and under /tmp, not in the pod's folder: programs listen on unix
sockets in TMPDIR (Velero's plugins do), and a socket's path holds at most 107 bytes, which a pod folder deep
in a test's temporary folder exceeds. It is named after the pod's sandbox, whose name starts with the fleet's
prefix, so taking the fleet down removes what a killed node agent left.
"""

import contextlib
import shutil
from pathlib import Path

ROOT = Path("/tmp/fleetdrill-tmp")


def fresh(sandbox: str, index: int) -> Path:
    """The TMPDIR of a new run of the pod's container at `index` (init containers first): empty, as a new
    container's /tmp is, and anyone may write there (a container may drop to another user: PostgreSQL's
    does)."""
    path = ROOT / sandbox / str(index)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    path.chmod(0o1777)
    return path


def remove(sandbox: str) -> None:
    """The temporary folders of one pod's containers."""
    shutil.rmtree(ROOT / sandbox, ignore_errors=True)


def remove_fleet(prefix: str) -> None:
    """The temporary folders of every pod of the fleet whose sandboxes' names start with `prefix`."""
    for path in ROOT.glob(f"{prefix}*"):
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        ROOT.rmdir()  # fails while another fleet's pods have folders there
