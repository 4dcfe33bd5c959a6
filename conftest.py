"""Root conftest: keeps collection to the drill catalogue and the tests, never the generated reports."""

collect_ignore = ["reports", "fixtures", "bench", ".venv"]
