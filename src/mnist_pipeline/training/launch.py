"""One training job on N local processes: `torchrun` workers, watched by the job's own process.

Lightning's DDP launcher re-executes `sys.argv` in each child, which under Hydra's `-m` re-runs the
whole sweep in every child (Lightning #11300). Instead the job's process stays a launcher: it writes
the job's resolved config next to its outputs, starts `torchrun` on it (which restarts nothing and
stops every worker when one fails), and owns the MLflow run: it creates it before the workers start
and sets its final status after, because a failing peer can get rank 0 killed before it could.

Under an outside launcher (torchrun, SLURM's srun: one per node) the processes are already there;
`train` then runs in each directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mnist_pipeline.atomic import write_text
from mnist_pipeline.config import reports_dir

# Set by the launcher for its workers: rank 0 logs into this run instead of creating one.
RUN_ID_ENV = "MNIST_PIPELINE_RUN_ID"
# ... and every worker continues from this checkpoint (resume=).
RESUME_ENV = "MNIST_PIPELINE_RESUME_CKPT"
WORKER_CONFIG = "ddp_config"


class WorkersFailed(RuntimeError):
    def __init__(self, returncode: int) -> None:
        super().__init__(f"a training process failed (torchrun exit code {returncode}); its error is above")
        self.returncode = returncode


def global_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def under_launcher() -> bool:
    """Started by torchrun, srun or this module, rather than by a user's command."""
    return "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", 1)) > 1


def layout(cfg: DictConfig) -> tuple[int, int]:
    """(processes in the whole run, processes on this machine)."""
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", devices))
    return devices * int(cfg.trainer.num_nodes), local


def run_workers(cfg: DictConfig, out_dir: Path, nproc: int, env: dict[str, str]) -> dict[str, float]:
    """Train `cfg` on `nproc` torchrun workers; the metrics rank 0 wrote to reports/metrics.json."""
    worker_cfg = OmegaConf.to_container(cfg, resolve=True)
    worker_cfg["paths"]["output_dir"] = str(out_dir)
    reports = reports_dir(cfg, out_dir)
    worker_cfg["paths"]["reports_dir"] = str(reports)
    worker_cfg["resume"] = None  # the launcher found the run; workers get its checkpoint (RESUME_ENV)
    (reports / "metrics.json").unlink(missing_ok=True)
    write_text(out_dir / f"{WORKER_CONFIG}.yaml", OmegaConf.to_yaml(OmegaConf.create(worker_cfg)))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        f"--nproc-per-node={nproc}", "--max-restarts=0", "--monitor-interval=0.5",
        "-m", "mnist_pipeline", "train", "--config-path", str(out_dir), "--config-name", WORKER_CONFIG,
        f"hydra.run.dir={out_dir}", "hydra.output_subdir=null",
    ]
    worker_env = {**os.environ, **env}
    for leftover in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        worker_env.pop(leftover, None)
    proc = subprocess.Popen(cmd, env=worker_env)
    try:
        returncode = proc.wait()
    except BaseException:  # killed ourselves (SIGINT, SIGTERM): stop the workers, then report
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if returncode != 0:
        raise WorkersFailed(returncode)
    return json.loads((reports / "metrics.json").read_text())
