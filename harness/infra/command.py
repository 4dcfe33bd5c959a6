"""The command provider: the user's own scripts do each infrastructure step, with templated arguments.

Commands are argv lists run without a shell, so a cluster or node name can never become shell syntax;
each placeholder is replaced inside its own argument. A failing command is one line naming the step, the
command, its exit code and the tail of its stderr. What a lose step returns is the last line it prints on
stdout that is not blank (a script may log above it); its restore step gets it as {handle}.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

from harness.config import CommandSettings
from harness.errors import FleetDrillError
from harness.infra.steps import Steps, last_line

STDERR_TAIL = 300


class CommandError(FleetDrillError):
    """A provider command is missing, failed or timed out."""


def render(template: tuple[str, ...], values: dict[str, Any]) -> list[str]:
    """The argv of a command template with its placeholders filled in (one argument stays one)."""
    return [part.format_map(values) for part in template]


def stderr_tail(text: str) -> str:
    """A command's stderr on one line, its last STDERR_TAIL characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= STDERR_TAIL else "..." + flat[-STDERR_TAIL:]


def run_command(
    argv: list[str], where: str, timeout_s: float, answers: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    """Run argv without a shell; how it ended, its exit status one of `answers`. Any other is a CommandError
    naming `where`, the command, its exit code and stderr's tail."""
    shown = " ".join(argv)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise CommandError(f"{where}: {argv[0]!r} not found (command: {shown})") from None
    except PermissionError:
        raise CommandError(f"{where}: {argv[0]!r} is not executable (command: {shown})") from None
    except subprocess.TimeoutExpired:
        raise CommandError(f"{where}: `{shown}` still ran after {timeout_s:.0f} s") from None
    if done.returncode not in answers:
        said = stderr_tail(done.stderr) or "no stderr"
        raise CommandError(f"{where}: `{shown}` exited {done.returncode}: {said}")
    return done


@dataclass(frozen=True)
class CommandProvider(Steps):
    """Runs infrastructure.settings.<step> for each provider method; `contexts`: kubeconfig context by
    cluster name."""

    settings: CommandSettings
    contexts: dict[str, str]
    places: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run_step(self, step: str, values: dict[str, Any]) -> str:
        """Run the step's command; the last line it printed that is not blank."""
        template = self.settings.step(step)
        where = f"infrastructure.settings.{step}"
        if template is None:
            raise CommandError(
                f"{where}: not set, and this fault needs it: add the command to the fleet file"
            )
        return last_line(run_command(render(template, values), where, self.settings.timeout).stdout)

    def look_across(self, step: str, values: dict[str, Any]) -> bool | None:
        """Exit 0: yes (traffic crosses); 1: no; anything else is a CommandError."""
        template = self.settings.step(step)
        if template is None:
            return None
        argv, where = render(template, values), f"infrastructure.settings.{step}"
        return run_command(argv, where, self.settings.timeout, answers=(0, 1)).returncode == 0
