"""Failover strategies, each declared once, in its own module of this package: its name, its settings
beside `strategy` in apps[].failover (a subclass of config.Failover), the permissions it needs in every
cluster, the timeline events that say it failed over, and how it runs.

The fleet file's schema and validation (config.failover_model), `doctor`'s permission check
(harness.needs), the failover runner (harness.failover) and the drill's reading of its timeline
(harness.drill) read this registry. A new strategy is one module here that calls `register`, and its test.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from harness.errors import ConfigError
from harness.permissions import Permission


@dataclass(frozen=True)
class Strategy:
    """One failover strategy."""

    name: str
    """Its name in apps[].failover.strategy."""
    run: Callable[..., None]
    """run(access, app, cluster, timeline): fail the app over to the cluster named, each step on the timeline
    (failing back is the same call). Its types are harness.fleet's and harness.config's, which this module
    does not import: they import it."""
    events: tuple[str, ...]
    """The timeline events it records on the cluster it failed over to."""
    does: str
    """What it does, in a sentence, for the fleet file's documentation."""
    settings: type[BaseModel] | None = None
    """Its fields in apps[].failover: a subclass of config.Failover (None: it has none)."""
    permissions: tuple[Permission, ...] = ()
    """What it (and its fail-back) calls in every cluster's API."""
    changes_fleet: bool = True
    """It changes the fleet (a failover the drill undoes by failing back); observe changes nothing."""
    prepare: Callable[..., None] | None = None
    """prepare(access, app): what it looks up in the clusters before a drill injects anything (API
    discovery), so a cluster lost later does not hold the failover up until its requests time out."""


STRATEGIES: dict[str, Strategy] = {}
"""Every strategy registered so far, by name."""


def register(strategy: Strategy) -> Strategy:
    """Add a strategy to the registry; a name taken already is a ValueError."""
    if strategy.name in STRATEGIES:
        raise ValueError(f"failover strategy {strategy.name}: registered already")
    STRATEGIES[strategy.name] = strategy
    return strategy


def all_strategies() -> dict[str, Strategy]:
    """Every strategy by name, in the order of their names, each module of this package imported
    (STRATEGIES holds those imported so far)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(STRATEGIES.items()))


def strategy(name: str) -> Strategy:
    """The strategy called `name` (the fleet file is checked against the registry when it is loaded)."""
    found = all_strategies()
    if name not in found:
        raise ConfigError(f"apps[].failover.strategy: expected one of {', '.join(found)}, got {name!r}")
    return found[name]


def failed_over_events() -> frozenset[str]:
    """The timeline events, of any strategy, that say the drill failed over to their cluster."""
    return frozenset(event for s in all_strategies().values() for event in s.events)
