"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd started as root on this
machine from a configuration in a temporary folder (no cgroups, no accounting daemon), and stopped
by their PIDs. See /work/shared/STACK-NOTES.md, "A one-node SLURM cluster, for tests".

Everything of the cluster (munge socket and key, state, spool, logs, pid files) lives in that folder,
so it touches neither the machine's /etc/slurm nor a munged someone else runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def missing_programs() -> list[str]:
    return [p for p in DAEMONS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class SlurmCluster:
    folder: Path
    env: dict[str, str]  # what a process needs to reach this cluster (SLURM_CONF)
    pid_files: tuple[Path, ...]

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def queue(self) -> list[tuple[str, str]]:
        """(job id, state) of every job slurmctld still knows, finished ones too."""
        out = self.run("squeue", "-h", "-t", "all", "-o", "%i|%T").stdout
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def queue_state(self, job: str) -> str:
        return dict(self.queue()).get(job, "GONE")

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the three daemons by the PIDs they wrote, last started first."""
        for pid_file in reversed(self.pid_files):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)


def start_cluster(folder: Path) -> SlurmCluster:
    """Write the configuration into `folder`, start munged, slurmctld and slurmd, wait until the
    node is idle. Raises RuntimeError (with the daemons' logs) when the cluster does not come up."""
    folder.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    munge_socket = folder / "munge.socket"
    key = folder / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=testcluster
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={munge_socket},cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
JobRequeue=1
KillWait=5
MinJobAge=300
InactiveLimit=0
SchedulerType=sched/backfill
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'slurmctld.log'}
SlurmdLogFile={folder / 'slurmd.log'}
PlugStackConfig={folder / 'plugstack.conf'}
NodeName={host} CPUs={cpus} RealMemory=8000 State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    (folder / "plugstack.conf").write_text("")
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    pid_files = (folder / "munged.pid", folder / "slurmctld.pid", folder / "slurmd.pid")
    cluster = SlurmCluster(folder, env, pid_files)
    try:
        subprocess.run([_program("munged"), "--force", f"--socket={munge_socket}", f"--key-file={key}",
                        f"--pid-file={pid_files[0]}", f"--log-file={folder / 'munged.log'}",
                        f"--seed-file={folder / 'munge.seed'}"], check=True, timeout=30, capture_output=True)
        subprocess.run([_program("slurmctld"), "-i"], env=full_env, check=True, timeout=30, capture_output=True)
        subprocess.run([_program("slurmd")], env=full_env, check=True, timeout=30, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=full_env, capture_output=True, text=True,
                                   timeout=30).stdout.strip()
            if state == "idle":
                return cluster
            time.sleep(0.5)
        raise RuntimeError(f"the node is not idle after 60 s (sinfo: {state!r})")
    except (subprocess.SubprocessError, RuntimeError) as e:
        logs = "\n".join(f"--- {n}.log\n{cluster.log(n)[-2000:]}" for n in ("munged", "slurmctld", "slurmd"))
        cluster.stop()
        stderr = getattr(e, "stderr", None) or ""
        raise RuntimeError(f"the test SLURM cluster did not start: {e} {stderr}\n{logs}") from e
