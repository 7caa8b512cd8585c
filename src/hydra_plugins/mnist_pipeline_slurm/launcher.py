"""The launcher class of `hydra/launcher=slurm`. Light on purpose: Hydra imports every module of
`hydra_plugins` at each start; the work is imported only when a sweep launches."""

from __future__ import annotations

from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class SlurmSweepLauncher(SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher: one job per sweep point, in a job array; here with
    no GPU asked for by a CPU trainer, and no wait on a job that can hang the sweep."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from mnist_pipeline.training.slurm_launcher import launch

        return launch(self, job_overrides, initial_job_idx)
