"""Helpers shared by the tests, imported as `from support import ...`; the fixtures come in as the
pytest plugin `support.plugin` (tests/conftest.py registers it)."""

from support.runs import (
           FAULTY,
           MNIST,
           ROOT,
           TinyRun,
           compose,
           metric_steps,
           mnist,
           store_client,
           store_runs,
           tiny_overrides,
)

__all__ = ["FAULTY", "MNIST", "ROOT", "TinyRun", "compose", "metric_steps", "mnist", "store_client",
           "store_runs", "tiny_overrides"]
