"""`mnist bench`, whole processes: what users wait for from a command's start to its end.

- `mnist train`, tutorial preset, against a bare PyTorch script doing the same (load the splits,
  train, evaluate on test, exit), with the pipeline's own breakdown of the last run;
- `mnist predict` of one picture with the champion, cold (each call a new process), against a bare
  process that imports torch, numpy and Pillow and runs one convolution.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BARE_SCRIPT = r'''
"""The tutorial as a bare PyTorch script: load the splits, train, evaluate on test, exit."""
import sys, time, numpy as np, torch
from torch.nn import functional as F
from mnist_pipeline.model.architectures.tfjs_cnn import TfjsCNN
torch.set_num_threads(int(sys.argv[2])); torch.manual_seed(0)
d = {n: np.load(f"{sys.argv[1]}/{n}.npz") for n in ("train", "val", "test")}
x, y = torch.from_numpy(d["train"]["images"]), torch.from_numpy(d["train"]["labels"])
vx = torch.from_numpy(d["val"]["images"][:1000]).unsqueeze(1).float() / 255
vy = torch.from_numpy(d["val"]["labels"][:1000])
net = TfjsCNN(); opt = torch.optim.SGD(net.parameters(), lr=0.15)
perm = torch.randperm(len(y))
for step in range(100):
    idx = perm[step * 64:(step + 1) * 64]
    loss = F.cross_entropy(net(x[idx].unsqueeze(1).float() / 255), y[idx])
    opt.zero_grad(); loss.backward(); opt.step()
    if (step + 1) % 5 == 0:
        with torch.inference_mode():
            vacc = (net(vx).argmax(1) == vy).float().mean()
with torch.inference_mode():
    tx = torch.from_numpy(d["test"]["images"]).unsqueeze(1).float() / 255
    acc = (net(tx).argmax(1) == torch.from_numpy(d["test"]["labels"])).float().mean().item()
print(f"test/acc {acc:.4f}")
'''


def whole_process(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


# `mnist`, as users run it (the console script of this environment), else the same through -m
MNIST = ([str(Path(sys.executable).parent / "mnist")] if (Path(sys.executable).parent / "mnist").is_file()
         else [sys.executable, "-m", "mnist_pipeline"])
BARE_PREDICT = ("import torch, numpy, PIL.Image; "
                "torch.nn.functional.conv2d(torch.zeros(1, 1, 28, 28), torch.zeros(8, 1, 5, 5))")


def whole_processes(processed: Path, tmp: Path, threads: int, rounds: int) -> None:
    """Both comparisons, `rounds` times each, into a store of their own under `tmp`."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/proc/mlflow.db"}
    (tmp / "bare.py").write_text(BARE_SCRIPT)
    bare_cmd = [sys.executable, str(tmp / "bare.py"), str(processed), str(threads)]
    pipe_cmd = [*MNIST, "train", f"paths.processed_dir={processed}", f"threads={threads}"]
    bare_p, pipe_p = [], []
    for i in range(rounds):
        bare_p.append(whole_process(bare_cmd, env))
        pipe_p.append(whole_process([*pipe_cmd, f"hydra.run.dir={tmp}/proc/run{i}"], env))
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tracking.store import experiment_id, experiment_name

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    last = client.search_runs([experiment_id(client, experiment_name())],
                              order_by=["attributes.start_time DESC"], max_results=1)[0].data.metrics
    total = statistics.median(pipe_p)
    parts = {k: last[f"perf/{k}_s"] for k in ("startup", "setup", "train_loop", "end_of_run")}
    parts["exit"] = total - sum(parts.values())
    print(f"\nwhole process, tutorial preset: bare script {statistics.median(bare_p):.2f} s, pipeline "
          f"{total:.2f} s, ratio {total / statistics.median(bare_p):.2f}")
    print("  breakdown (last run): " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()), flush=True)
    predict_cold(env, processed, tmp, rounds)


def predict_cold(env: dict, processed: Path, tmp: Path, rounds: int) -> None:
    """`mnist predict digit.png` with the champion (the newest run of `env`'s store, promoted), each
    call a new process, against a bare process: torch, numpy and Pillow imported, one convolution.
    The first call fills the local cache of the model's files. Then, in each round: a call with the
    store as the last call left it (its answer is reused), and one after a write to the store
    (MLflow's client asks it again, in a forked process, while torch loads)."""
    import numpy as np
    from PIL import Image

    subprocess.run([*MNIST, "promote", "--all"], check=True, capture_output=True, env=env)
    with np.load(processed / "test.npz") as npz:
        Image.fromarray(npz["images"][0]).save(tmp / "digit.png")
    env = {**env, "MNIST_PIPELINE_CACHE": str(tmp / "model-cache")}
    predict = [*MNIST, "predict", str(tmp / "digit.png")]
    db = Path(env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    first = whole_process(predict, env)
    bare, cached, asked = [], [], []
    for _ in range(rounds):
        bare.append(whole_process([sys.executable, "-c", BARE_PREDICT], env))
        cached.append(whole_process(predict, env))
        db.touch()  # what any write to the store does to it
        asked.append(whole_process(predict, env))
    b = statistics.median(bare)
    print(f"mnist predict, one picture, the champion, cold process: bare process (torch, numpy, Pillow, one "
          f"conv) {b:.2f} s; first call (fills the cache) {first:.2f} s", flush=True)
    for name, times in (("store unchanged since the last call", cached), ("store written since", asked)):
        ratio = statistics.median(x / y for x, y in zip(times, bare))
        print(f"  {name}: {statistics.median(times):.2f} s, {ratio:.2f}x the bare process", flush=True)
