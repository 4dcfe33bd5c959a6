"""fleetdrill: chaos and disaster-recovery drills for multi-cluster Kubernetes fleets, as pytest tests."""

__version__ = "0.1.0"
