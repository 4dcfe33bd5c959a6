"""The runner's load over a drill, from /proc/stat's CPU times."""

from pathlib import Path

from harness.machine import MachineLoad, cpu_times


def stat(folder: Path, user: int, idle: int, steal: int = 0) -> Path:
    path = folder / "stat"
    path.write_text(f"cpu  {user} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n")
    return path


def test_busy_is_the_share_of_cpu_time_not_idle_steal_counted_busy(tmp_path: Path) -> None:
    before = cpu_times(stat(tmp_path, user=1000, idle=1000))
    assert before is not None and (before.busy, before.total) == (1000, 2000)
    load = MachineLoad.since(before, stat(tmp_path, user=1800, idle=1100, steal=100))
    assert load.busy == 0.9 and load.loaded
    assert load.describe().startswith(f"{load.cpus} CPU") and "90% busy" in load.describe()
    assert not MachineLoad.since(before, stat(tmp_path, user=1500, idle=1500)).loaded


def test_without_proc_stat_the_load_is_unknown_never_loaded(tmp_path: Path) -> None:
    assert cpu_times(tmp_path / "absent") is None
    load = MachineLoad.since(None, tmp_path / "absent")
    assert load.busy is None and not load.loaded and "busy share unknown" in load.describe()
