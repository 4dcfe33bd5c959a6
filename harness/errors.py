"""The one exception root of fleetdrill; every message says what is wrong and how to fix it."""


class FleetDrillError(Exception):
    """Base of every error fleetdrill raises on purpose."""


class ConfigError(FleetDrillError):
    """A user's input (fleet file, option, argument) is invalid: one line naming source and field."""
