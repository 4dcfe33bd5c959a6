"""Harness core does not know which fleet it drives: only the CLI and the provider seam import the local
fleet (ARCHITECTURE.md). Checked from the source, as an import-linter contract would."""

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "harness"
ALLOWED = ("localfleet/", "infra/localfleet.py", "infra/providers.py", "cli.py")
"""The local fleet itself, its provider and the factory choosing it (the seam), and the CLI: paths below
harness/, or their start."""


def imported_modules(path: Path, root: Path = HARNESS.parent) -> set[str]:
    """Every module a file imports, relative imports resolved against its package (below root)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return found


def core_files() -> list[Path]:
    return [
        path for path in HARNESS.rglob("*.py") if not path.relative_to(HARNESS).as_posix().startswith(ALLOWED)
    ]


def test_harness_core_never_imports_the_local_fleet() -> None:
    leaks = {
        str(path.relative_to(HARNESS.parent)): sorted(m for m in imported_modules(path) if "localfleet" in m)
        for path in core_files()
    }
    assert {file: modules for file, modules in leaks.items() if modules} == {}


def test_the_check_sees_an_import_of_the_local_fleet(tmp_path: Path) -> None:
    """The contract can fail: both spellings of such an import are seen."""
    module = tmp_path / "harness" / "faults" / "leaky.py"
    module.parent.mkdir(parents=True)
    module.write_text("from harness.localfleet import supervisor\nfrom ..localfleet import netns\n")
    found = imported_modules(module, tmp_path)
    assert found >= {"harness.localfleet.supervisor", "harness.localfleet.netns"}
