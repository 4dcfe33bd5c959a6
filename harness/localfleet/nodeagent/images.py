"""The image catalogue: no registry is reachable, so an image name maps to what runs for it.

The sample app's image runs our sample app; a stress image runs the real stress or stress-ng from
Debian's packages of those names (polinux/stress and progrium/stress: stress; alexeiled/stress-ng and
fleetdrill.io/stress: stress-ng), with the pod's command and args, in a writable folder of its own (the
container's, as a real one starts in its own root filesystem: stress-ng keeps its temporary files in
its working directory and refuses to start where it cannot write); Velero's
image runs the built velero programs (server, node agent, restore helper) and its AWS plugin's image
copies the built plugin into the pod's plugin volume, as the image's entrypoint does; Chaos Mesh's
controller-manager image (ghcr.io/chaos-mesh/chaos-mesh) runs our chaos controller; the official
postgres image (tags 15 and up) runs the PostgreSQL of its major version that Debian's packages installed
(/usr/lib/postgresql/N/bin, first on the container's PATH, so exec probes and `kubectl exec` find
pg_isready and psql) behind our version of its entrypoint (harness.localfleet.pgentrypoint); Prometheus'
image (prom/prometheus, any tag) runs the Prometheus server built from its Go module (`fleet build
--prometheus`; Debian's package leaves out Kubernetes service discovery), with the image's default
arguments when the pod gives none; metrics-server's image (registry.k8s.io/metrics-server/metrics-server)
runs the metrics-server built from its Go module (`fleet up --metrics-server`) with the pod's args; any
other image runs an idle process that is Running and Ready, so `kubectl create deployment
--image=nginx` works. The pod's own command wins when the catalogue can run it (a real program on
this machine); without a command its args are the argv, as for an image with no ENTRYPOINT (the base
images: busybox, debian, alpine); otherwise the idle process runs and the container's status message
says so.
"""

import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_APP_IMAGE = "fleetdrill.io/orders"
STRESS_IMAGES = {
    "polinux/stress": "stress",
    "progrium/stress": "stress",
    "alexeiled/stress-ng": "stress-ng",
    "fleetdrill.io/stress": "stress-ng",
}
"""A stress image and the program its entrypoint runs."""
STRESS_PROGRAMS = {"stress": Path("/usr/bin/stress"), "stress-ng": Path("/usr/bin/stress-ng")}
"""The real programs, from Debian's packages of the same names (.ci/bootstrap installs them)."""
VELERO_IMAGE = "velero/velero"
VELERO_PROGRAMS = ("velero", "velero-restore-helper", "velero-helper")
VELERO_AWS_PLUGIN_IMAGE = "velero/velero-plugin-for-aws"
VELERO_AWS_PLUGIN = "velero-plugin-for-aws"
VELERO_BIN_ENV = "FLEETDRILL_VELERO_BIN_DIR"
"""Where the node agent finds the built velero programs (the supervisor sets it)."""
CHAOS_IMAGES = ("ghcr.io/chaos-mesh/chaos-mesh", "fleetdrill.io/chaos")
"""Chaos Mesh's controller-manager image runs our chaos controller (harness.localfleet.chaos)."""
POSTGRES_IMAGES = ("postgres", "docker.io/postgres", "library/postgres", "docker.io/library/postgres")
POSTGRES_ROOT = Path("/usr/lib/postgresql")
"""Debian's PostgreSQL servers, one folder per major version (.ci/bootstrap installs `postgresql`)."""
POSTGRES_OLDEST = 15
POSTGRES_ENTRYPOINT = "docker-entrypoint.sh"
PROMETHEUS_IMAGES = ("prom/prometheus", "docker.io/prom/prometheus", "quay.io/prometheus/prometheus")
PROMETHEUS_BIN_ENV = "FLEETDRILL_PROMETHEUS_BIN_DIR"
"""Where the node agent finds the built prometheus server (the supervisor sets it with --prometheus)."""
PROMETHEUS_ARGS = ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
"""The image's CMD (its ENTRYPOINT is /bin/prometheus), as on Docker Hub."""
METRICS_SERVER_IMAGES = (
    "registry.k8s.io/metrics-server/metrics-server",
    "k8s.gcr.io/metrics-server/metrics-server",
)
METRICS_SERVER_BIN_ENV = "FLEETDRILL_METRICS_SERVER_BIN_DIR"
"""Where the node agent finds the built metrics-server (the supervisor sets it with --metrics-server)."""
IDLE = [sys.executable, "-c", "import signal; signal.pause()"]


@dataclass(frozen=True)
class Resolved:
    """What to exec for a container, and a note when it is not what the pod asked for."""

    argv: list[str]
    note: str = ""
    own_folder: bool = False
    """Start in a writable folder of the container's own when the pod names no workingDir."""
    env: dict[str, str] = field(default_factory=dict)
    """The image's own environment (its ENV lines), beneath the pod's."""
    stop_signal: int = signal.SIGTERM
    """The image's STOPSIGNAL: what the runtime sends to stop the container (containerd honours it)."""


def _tag(image: str) -> str:
    """The image's tag, "" when it has none."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else ""


def _repository(image: str) -> str:
    """The image name without tag or digest."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def resolve(image: str, command: list[str], args: list[str]) -> Resolved:
    """The argv for a container of `image` with the pod's command and args."""
    if _repository(image) == SAMPLE_APP_IMAGE:
        return Resolved([sys.executable, "-m", "harness.localfleet.sampleapp", *args])
    if stress := STRESS_IMAGES.get(_repository(image).removeprefix("docker.io/")):
        return _stress(image, stress, command, args)
    if _repository(image) in CHAOS_IMAGES:
        return Resolved([sys.executable, "-m", "harness.localfleet.chaos", *args])
    if _repository(image) in (VELERO_IMAGE, f"docker.io/{VELERO_IMAGE}"):
        return _velero(image, command, args)
    if _repository(image) in (VELERO_AWS_PLUGIN_IMAGE, f"docker.io/{VELERO_AWS_PLUGIN_IMAGE}"):
        return _velero_plugin(image)
    if _repository(image) in POSTGRES_IMAGES:
        return _postgres(image, command, args)
    if _repository(image) in PROMETHEUS_IMAGES:
        return _prometheus(image, command, args)
    if _repository(image) in METRICS_SERVER_IMAGES:
        return _metrics_server(image, command, args)
    argv = [*command, *args] if command else args  # an image outside the catalogue: no ENTRYPOINT known
    if argv and shutil.which(argv[0]):
        return Resolved(argv)
    if argv:
        return Resolved(IDLE, f"image {image}: {argv[0]!r} is not available here; running an idle process")
    return Resolved(IDLE, f"image {image} is not in the catalogue; running an idle process")


def missing_programs() -> list[str]:
    """The stress programs this machine lacks (each from the Debian package of its name)."""
    return [name for name, path in STRESS_PROGRAMS.items() if not os.access(path, os.X_OK)]


def _stress(image: str, entrypoint: str, command: list[str], args: list[str]) -> Resolved:
    """A stress image runs its entrypoint's program (or the pod's command: stress or stress-ng)."""
    program = Path(command[0]).name if command else entrypoint
    if program not in STRESS_PROGRAMS:
        return Resolved(IDLE, f"image {image}: only stress and stress-ng run here, not {command[0]!r}")
    if program in missing_programs():
        return Resolved(IDLE, f"image {image}: {program} is not installed here (Debian's {program} package)")
    return Resolved([str(STRESS_PROGRAMS[program]), *command[1:], *args], own_folder=True)


def _velero_bin() -> Path | None:
    folder = os.environ.get(VELERO_BIN_ENV)
    return Path(folder) if folder else None


def _velero(image: str, command: list[str], args: list[str]) -> Resolved:
    """Velero's image holds /velero (entrypoint), /velero-restore-helper and /velero-helper."""
    program = Path(command[0]).name if command else "velero"
    folder = _velero_bin()
    if folder is None or program not in VELERO_PROGRAMS:
        return Resolved(IDLE, f"image {image}: {program!r} is not one of the built velero programs here")
    return Resolved([str(folder / program), *command[1:], *args])


def _velero_plugin(image: str) -> Resolved:
    """The plugin image's entrypoint copies its plugin binary into /target (the Velero pod's plugins
    volume, which `velero install` mounts there)."""
    folder = _velero_bin()
    if folder is None:
        return Resolved(IDLE, f"image {image}: the velero plugin was not built here")
    return Resolved(["cp", str(folder / VELERO_AWS_PLUGIN), f"/target/{VELERO_AWS_PLUGIN}"])


def postgres_majors() -> list[int]:
    """The PostgreSQL major versions installed here, oldest first."""
    found = [p.parent.parent.name for p in POSTGRES_ROOT.glob("*/bin/postgres")]
    return sorted(int(name) for name in found if name.isdigit())


def postgres_major(tag: str, installed: list[int]) -> int | None:
    """The major version a postgres tag asks for (15, 15.4, 15-bookworm, 16.2-alpine); a tag without
    one (none, latest, alpine, bookworm) takes the newest installed."""
    digits = tag.split(".", 1)[0].split("-", 1)[0]
    if digits.isdigit():
        return int(digits)
    return installed[-1] if installed else None


def _postgres(image: str, command: list[str], args: list[str]) -> Resolved:
    """The postgres image: ENTRYPOINT docker-entrypoint.sh, CMD postgres, STOPSIGNAL SIGINT (the server's
    fast shutdown: SIGTERM is its smart one, which waits for every client); ENV PATH with the server's bin
    folder first, PG_MAJOR, PGDATA. A command other than the entrypoint runs as it is, as in the image."""
    installed = postgres_majors()
    major = postgres_major(_tag(image), installed)
    if major is None or major < POSTGRES_OLDEST or major not in installed:
        have = ", ".join(map(str, installed)) or "none"
        wanted = f"PostgreSQL {major}" if major is not None else "PostgreSQL"
        return Resolved(IDLE, f"image {image}: {wanted} is not installed here (installed: {have}; "
                        f"tags {POSTGRES_OLDEST} and up run Debian's postgresql-N)")  # fmt: skip
    bin_dir = POSTGRES_ROOT / str(major) / "bin"
    path = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = {"PATH": path, "PG_MAJOR": str(major), "PGDATA": "/var/lib/postgresql/data", "LANG": "C.UTF-8"}
    if not command or Path(command[0]).name == POSTGRES_ENTRYPOINT:
        entrypoint = [sys.executable, "-m", "harness.localfleet.pgentrypoint"]
        return Resolved([*entrypoint, *command[1:], *args], env=env, stop_signal=signal.SIGINT)
    if shutil.which(command[0], path=path) is None:
        return Resolved(IDLE, f"image {image}: {command[0]!r} is not available here; running an idle process")
    return Resolved([*command, *args], env=env, stop_signal=signal.SIGINT)


def _prometheus(image: str, command: list[str], args: list[str]) -> Resolved:
    """Prometheus' image: ENTRYPOINT /bin/prometheus, CMD its config file and storage path (args replace
    the CMD), WORKDIR /prometheus (here a folder of the container's own)."""
    folder = os.environ.get(PROMETHEUS_BIN_ENV)
    program = Path(command[0]).name if command else "prometheus"
    if not folder or program != "prometheus":
        return Resolved(
            IDLE, f"image {image}: {program!r} is not a built program here (fleet up --prometheus)"
        )
    rest = [*command[1:], *args] if command else (args or PROMETHEUS_ARGS)
    return Resolved([str(Path(folder) / "prometheus"), *rest], own_folder=True)


def _metrics_server(image: str, command: list[str], args: list[str]) -> Resolved:
    """metrics-server's image: ENTRYPOINT /metrics-server (distroless, nothing else in it), no CMD."""
    folder = os.environ.get(METRICS_SERVER_BIN_ENV)
    program = Path(command[0]).name if command else "metrics-server"
    if not folder or program != "metrics-server":
        return Resolved(
            IDLE, f"image {image}: {program!r} is not a built program here (fleet up --metrics-server)"
        )
    return Resolved([str(Path(folder) / "metrics-server"), *command[1:], *args], own_folder=True)
