"""Bad sweep points stopped early (`sweep.prune=median`).

A pruned point returns `Pruned`: its value (the selection metric of its best checkpoint so far) as
a float, which every sweeper understands, that also says where it stopped, which the Optuna sweeper
reads to mark its trial PRUNED.
"""

from __future__ import annotations


class Pruned(float):
    """The value a pruned sweep point returns to Hydra: a float, with `at_step`."""

    def __new__(cls, value: float, at_step: int) -> Pruned:
        pruned = super().__new__(cls, value)
        pruned.at_step = at_step
        return pruned

    def __reduce__(self):  # joblib and submitit send it back to the sweeper pickled
        return Pruned, (float(self), self.at_step)
