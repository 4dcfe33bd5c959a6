"""Upstream files the tests apply as they are (the real CRDs of the tools our examples fit), read from
their Go modules through the Go module proxy (`go mod download`, cached in the module cache)."""

import json
import os
import subprocess
from pathlib import Path

ARGO_ROLLOUTS = ("github.com/argoproj/argo-rollouts", "v1.8.3")
FLAGGER = ("github.com/fluxcd/flagger", "v1.36.1")


def module_file(module: tuple[str, str], path: str) -> str:
    """The text of `path` in the Go module at its version, downloaded when not yet in the module cache."""
    name, version = module
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"{name}@{version}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod"),
        check=False,
    )
    found = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in found:
        raise AssertionError(f"go mod download {name}@{version} failed: {found.get('Error') or done.stderr}")
    return (Path(found["Dir"]) / path).read_text()
