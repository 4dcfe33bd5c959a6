"""Build the real Kubernetes binaries from their Go modules into a cache keyed by the pinned versions.

The build manifests live in gobuild/ beside this file (go.mod, go.sum: the pins). A cold build
compiles a few thousand packages and takes minutes; a warm one finds the stamp and returns at once.
Users who can download official release binaries pass --bin-dir (or FLEETDRILL_BIN_DIR) instead.
"""

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FleetDrillError

GOBUILD = Path(__file__).parent / "gobuild"
COLD_BUILD_FREE_BYTES = 10 * 2**30
STAMP = ".complete"
PACKAGE_LINE = re.compile(r"^[\w.~/-]+$")


class BuildError(FleetDrillError):
    """The binaries could not be built or found."""


@dataclass(frozen=True)
class GoModule:
    """One Go build module under gobuild/ and the binaries it yields (binary name -> package)."""

    name: str
    binaries: dict[str, str]
    pinned: str
    """The module whose pinned version names the build (and, for Kubernetes, stamps the binaries)."""
    version_stamps: tuple[str, ...] = ()
    """Package variables set to the pinned version at link time, as the project's own release build does."""
    tags: tuple[str, ...] = ()
    """Build tags, as the project's own release build can be given them."""
    release: Callable[[str], str] = str
    """The release a pinned module version stands for (Prometheus 3.16.0 is its module's v0.316.0)."""

    @property
    def folder(self) -> Path:
        return GOBUILD / self.name

    def pin(self, module: str) -> str:
        """The version go.mod requires of a module."""
        found = re.search(
            rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", (self.folder / "go.mod").read_text(), re.M
        )
        if not found:
            raise BuildError(f"{self.folder / 'go.mod'}: no requirement of {module}")
        return found.group(1)

    def go_version(self) -> tuple[int, ...]:
        """The Go version go.mod asks for."""
        found = re.search(r"^go (\d+(?:\.\d+)*)", (self.folder / "go.mod").read_text(), re.M)
        return tuple(int(part) for part in found.group(1).split(".")) if found else (1,)

    def ldflags(self) -> str:
        """Stamp the real release version, as the project's release build does."""
        version = self.pin(self.pinned)
        if self.pinned != "k8s.io/kubernetes":
            release = self.release(version)
            return " ".join(["-s", "-w", *(f"-X {variable}={release}" for variable in self.version_stamps)])
        major, minor = version.lstrip("v").split(".")[:2]
        flags = ["-s", "-w"]
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {package}.gitVersion={version}",
                f"-X {package}.gitMajor={major}",
                f"-X {package}.gitMinor={minor}",
                f"-X {package}.gitTreeState=clean",
            ]
        return " ".join(flags)

    def key(self) -> str:
        """Cache key: the pinned release and a hash of the manifests and build flags."""
        digest = hashlib.sha256()
        for path in sorted(self.folder.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(self.folder).as_posix().encode() + path.read_bytes())
        digest.update(self.ldflags().encode() + ",".join(self.tags).encode())
        return f"{self.name}-{self.pin(self.pinned)}-{digest.hexdigest()[:12]}"


KUBE = GoModule(
    "kube",
    {
        "etcd": "./cmd/etcd",
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    },
    "k8s.io/kubernetes",
)
CNI = GoModule(
    "cni",
    {
        "bridge": "github.com/containernetworking/plugins/plugins/main/bridge",
        "host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
        "loopback": "github.com/containernetworking/plugins/plugins/main/loopback",
        "portmap": "github.com/containernetworking/plugins/plugins/meta/portmap",
    },
    "github.com/containernetworking/plugins",
)
VELERO = GoModule(
    "velero",
    {
        "velero": "github.com/vmware-tanzu/velero/cmd/velero",
        "velero-helper": "github.com/vmware-tanzu/velero/cmd/velero-helper",
        "velero-restore-helper": "github.com/vmware-tanzu/velero/cmd/velero-restore-helper",
        "velero-plugin-for-aws": "github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws",
    },
    "github.com/vmware-tanzu/velero",
    ("github.com/vmware-tanzu/velero/pkg/buildinfo.Version",),
)
MINIO = GoModule("minio", {"minio": "github.com/minio/minio"}, "github.com/minio/minio")
COREDNS = GoModule("coredns", {"coredns": "./cmd/coredns"}, "github.com/coredns/coredns")
MODULES = (KUBE, CNI, VELERO, MINIO, COREDNS)


def prometheus_release(version: str) -> str:
    """Prometheus' release from its module version: v0.316.0 is 3.16.0 (major and minor in the minor)."""
    _, minor, patch = version.lstrip("v").split(".")[:3]
    return f"{int(minor) // 100}.{int(minor) % 100}.{patch}"


PROMETHEUS = GoModule(
    "prometheus",
    {"prometheus": "github.com/prometheus/prometheus/cmd/prometheus"},
    "github.com/prometheus/prometheus",
    ("github.com/prometheus/common/version.Version",),
    # Only the service discovery a cluster's Prometheus uses (file and http are always in): the
    # project's documented build tags for leaving out the others, which saves most of the build.
    ("remove_all_sd", "enable_kubernetes_sd"),
    prometheus_release,
)
METRICS_SERVER = GoModule(
    "metrics-server",
    {"metrics-server": "sigs.k8s.io/metrics-server/cmd/metrics-server"},
    "sigs.k8s.io/metrics-server",
    ("k8s.io/client-go/pkg/version.gitVersion",),
)
OPTIONAL = (PROMETHEUS, METRICS_SERVER)
"""Built only when asked for (`fleet build --prometheus`, `fleet up --metrics-server`)."""
Progress = Callable[[str, int, int], None]


def cache_root() -> Path:
    """Where built binaries live: $FLEETDRILL_CACHE, else $XDG_CACHE_HOME/fleetdrill."""
    if os.environ.get("FLEETDRILL_CACHE"):
        return Path(os.environ["FLEETDRILL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fleetdrill"


def check_go(required: tuple[int, ...]) -> str:
    """The Go toolchain's path; one clear error when it is missing or older than required."""
    go = shutil.which("go")
    wanted = ".".join(map(str, required))
    if not go:
        raise BuildError(f"Go is not installed: building the local fleet needs Go >= {wanted} (or --bin-dir)")
    version = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    found = re.match(r"go(\d+(?:\.\d+)*)", version)
    if not found or tuple(int(part) for part in found.group(1).split(".")) < required:
        raise BuildError(f"Go {version or '?'} is too old: the local fleet needs Go >= {wanted}")
    return go


def find_binaries(bin_dir: Path, extra: tuple[GoModule, ...] = ()) -> dict[str, Path]:
    """Binaries from a folder of official releases; one line naming what is missing."""
    wanted = [name for module in (*MODULES, *extra) for name in module.binaries]
    missing = [name for name in wanted if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise BuildError(f"--bin-dir {bin_dir}: missing executables: {', '.join(missing)}")
    return {name: bin_dir / name for name in wanted}


def ensure_binaries(
    bin_dir: Path | None = None, progress: Progress | None = None, extra: tuple[GoModule, ...] = ()
) -> dict[str, Path]:
    """Every binary the local fleet runs (and those of the `extra` modules, from OPTIONAL), built once into
    the cache (or taken from bin_dir)."""
    bin_dir = bin_dir or (
        Path(os.environ["FLEETDRILL_BIN_DIR"]) if os.environ.get("FLEETDRILL_BIN_DIR") else None
    )
    if bin_dir:
        return find_binaries(bin_dir, extra)
    found: dict[str, Path] = {}
    for module in (*MODULES, *extra):
        target = cache_root() / "bin" / module.key()
        if not (target / STAMP).exists():
            build(module, target, progress)
        found.update({name: target / name for name in module.binaries})
    return found


def _go_env() -> dict[str, str]:
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false", GOWORK="off")
    env.pop("GOOS", None)
    env.pop("GOARCH", None)
    return env


def _check_disk() -> None:
    gocache = subprocess.run(
        ["go", "env", "GOCACHE"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    probe = Path(gocache or Path.home())
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if not Path(gocache, "trim.txt").exists() and free < COLD_BUILD_FREE_BYTES:
        raise BuildError(
            f"a cold build needs about 10 GB free for Go's caches; {probe} has {free / 2**30:.1f} GB"
        )


def build(module: GoModule, target: Path, progress: Progress | None = None) -> None:
    """One `go build` of every binary of the module (shared packages compile once) into target."""
    check_go(module.go_version())
    _check_disk()
    env, cwd = _go_env(), module.folder
    report = progress or (lambda _stage, _done, _total: None)
    report("downloading Go modules", 0, 0)
    _run(["go", "mod", "download"], cwd, env, "downloading Go modules")
    packages = list(module.binaries.values())
    tags = [f"-tags={','.join(module.tags)}"] if module.tags else []
    listed = _run(["go", "list", "-deps", *tags, *packages], cwd, env, "listing packages")
    total = len(listed.splitlines())
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    argv = [
        "go",
        "build",
        "-v",
        "-trimpath",
        *tags,
        "-ldflags",
        module.ldflags(),
        "-o",
        f"{staging}/",
        *packages,
    ]
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    done, errors = 0, []
    for line in proc.stderr:
        if PACKAGE_LINE.match(line):
            done += 1
            report(f"compiling {module.name}", min(done, total), total)
        elif line.strip():
            errors.append(line.rstrip())
    if proc.wait() != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"go build in {cwd} failed: {' | '.join(errors[-5:])}")
    (staging / STAMP).write_text(module.key())
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    report(f"compiling {module.name}", total, total)


def _run(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise BuildError(f"{what} failed in {cwd}: {done.stderr.strip()[-500:]}")
    return done.stdout
