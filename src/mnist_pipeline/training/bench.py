"""Benchmark: `make bench` (`mnist bench`). Prints figures; asserts nothing.

In one process, interleaved (bare, pipeline, bare, pipeline, ...; median of the rounds), a bare
PyTorch loop of the tutorial's CNN on the same in-memory data against the pipeline's own
`train(cfg)` with its real logger (MLflow on a temporary SQLite store) and default callbacks
(periodic checkpoints included), for the tutorial protocol and for one epoch without validation.
The in-process ratio compares training loops, from the first batch to the last periodic validation,
per-step metric logging included; the pipeline's end of run (full val and test passes,
checkpoints, reports, model logging) is its own line. For the epoch, Lightning's own loop with a
minimal module (no logger, callbacks or metrics) shows how much of the overhead is Lightning's.
Then whole processes (`bench_processes.py`), and `experiment=full` and `experiment=fast99` once
each, with fast99's time to 99% validation accuracy.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mnist_pipeline.training.bench_processes import whole_processes


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_loop(splits, steps: int, val_every: int | None, seed: int = 0, device: str = "cpu") -> float:
    """The tutorial in plain PyTorch, same data (all of it on `device`) and sampling; seconds from
    the first batch to the last validation (or the last step)."""
    import torch
    from torch.nn import functional as F

    from mnist_pipeline.model.architectures.tfjs_cnn import TfjsCNN

    torch.manual_seed(seed)
    images, labels = (t.to(device) for t in splits["train"])
    val_x = splits["val"][0][:1000].to(device).unsqueeze(1).float().div_(255)
    val_y = splits["val"][1][:1000].to(device)
    net = TfjsCNN().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.15)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=gen).to(device)
    started = time.perf_counter()
    for step in range(steps):
        pos = step % (len(labels) // 64)
        idx = perm[pos * 64 : (pos + 1) * 64]
        x = images.index_select(0, idx).unsqueeze(1).float().div_(255)  # as fast as the pipeline's
        y = labels.index_select(0, idx)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_acc = (logits.argmax(1) == y).float().mean()  # what the pipeline logs
        loss.item(), train_acc.item()
        if val_every and (step + 1) % val_every == 0:
            net.eval()
            with torch.inference_mode():
                val_logits = net(val_x)
                float(F.cross_entropy(val_logits, val_y)), float((val_logits.argmax(1) == val_y).float().mean())
            net.train()
    return time.perf_counter() - started


def lightning_floor(splits, steps: int, device: str = "cpu") -> float:
    """Lightning's own training loop with nothing of the pipeline: a minimal LightningModule (same
    model, SGD, loss only: no metrics), no logger, callbacks or checkpoints; seconds from the first
    batch to the end of the last. What is left of the pipeline's overhead once this is subtracted is
    the pipeline's own."""
    import pytorch_lightning as pl
    import torch
    from torch.nn import functional as F

    from mnist_pipeline.model.architectures.tfjs_cnn import TfjsCNN
    from mnist_pipeline.training.datamodule import TrainBatches

    class Minimal(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = TfjsCNN()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.15)

    class Clock(pl.Callback):
        started = ended = 0.0

        def on_train_batch_start(self, *args) -> None:
            self.started = self.started or time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            self.ended = time.perf_counter()

    torch.manual_seed(0)
    clock = Clock()
    images, labels = (t.to(device) for t in splits["train"])
    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[clock], limit_val_batches=0, use_distributed_sampler=False)
    trainer.fit(Minimal(), train_dataloaders=TrainBatches(images, labels, 64, 0, 0, 1, lambda: 0))
    return clock.ended - clock.started


def pipeline_run(processed: Path, tmp: Path, overrides: list[str]) -> dict[str, float]:
    """`train(cfg)` with MLflow on a fresh SQLite store; its perf/* metrics and results."""
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.config import compose
    from mnist_pipeline.tracking.store import experiment_id, experiment_name
    from mnist_pipeline.training.train import train

    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    uri = f"sqlite:///{run_dir}/mlflow.db"
    results = train(compose([f"paths.processed_dir={processed}", f"logger.tracking_uri={uri}",
                             f"paths.output_dir={run_dir}/out", *overrides]))
    client = MlflowClient(uri)
    (run,) = client.search_runs([experiment_id(client, experiment_name())])
    return {**run.data.metrics, **results, "_run_id": run.info.run_id, "_uri": uri,
            "_batch_size": int(run.data.params["data.batch_size"])}


def time_to(client_uri: str, run_id: str, key: str, threshold: float, steps_per_s: float) -> float | None:
    """Seconds of training until `key` first reached `threshold` (from the steps it was logged at)."""
    from mlflow.tracking import MlflowClient

    for m in sorted(MlflowClient(client_uri).get_metric_history(run_id, key), key=lambda m: m.step):
        if m.value >= threshold:
            return m.step / steps_per_s
    return None


def row(name: str, seconds: float, samples: int, rss: float | None, ratio: float | None) -> str:
    rss_text = f"{rss:7.0f}" if rss else "      -"
    ratio_text = f"{ratio:5.2f}" if ratio else "    -"
    return f"| {name:<46} | {seconds:8.3f} | {samples / seconds:10.0f} | {rss_text} | {ratio_text} |"


def main(argv: list[str] | None = None, prog: str = "mnist bench") -> None:
    import torch

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--processed-dir", default="data/processed")
    parser.add_argument("--skip-presets", action="store_true", help="only the interleaved comparisons")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="gpu: bare loop and pipeline (trainer=gpu) on one GPU, the whole dataset in its "
                             "memory; the whole-process comparison is CPU only")
    args = parser.parse_args(argv)
    on_gpu = args.device == "gpu"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("error: --device gpu: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    device = "cuda" if on_gpu else "cpu"

    from mnist_pipeline.config import resolve_path
    from mnist_pipeline.data.processed import load_splits

    processed = resolve_path(args.processed_dir)
    splits = load_splits(processed)
    torch.set_num_threads(args.threads)
    common = [f"threads={args.threads}", *(["trainer=gpu"] if on_gpu else [])]
    gpu_name = f", GPU: {torch.cuda.get_device_name()}" if on_gpu else ""
    print(f"threads: {args.threads} (torch {torch.__version__}, {os.cpu_count()} cores), rounds: {args.rounds}, "
          f"machine: {os.uname().machine} {os.uname().nodename}{gpu_name}")

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pipeline_run(processed, tmp, [*common, "trainer.max_steps=10"])  # warm-up: imports, first-call costs
        bare_loop(splits, 10, 5, device=device)
        table = ["| what | seconds (median) | samples/s | peak RSS MB | / bare loop (median of rounds) |",
                 "|---|---|---|---|---|"]
        protocols = {
            "tutorial: 100 steps + 20 validations of 1000": (100, 5, ["experiment=tutorial"]),
            "one epoch (859 steps of 64), no validation": (859, None, ["trainer.max_steps=859",
                                                                        "trainer.val_check_interval=100000"]),
        }
        end_of_run = []
        for name, (steps, val_every, overrides) in protocols.items():
            bare, pipe, data, floor = [], [], [], []
            for _ in range(args.rounds):
                bare.append(bare_loop(splits, steps, val_every, device=device))
                if val_every is None:
                    floor.append(lightning_floor(splits, steps, device=device))
                run = pipeline_run(processed, tmp, [*common, *overrides])
                pipe.append(run["perf/train_loop_s"])
                data.append(run["perf/data_fraction"])
                end_of_run.append(run["perf/end_of_run_s"])
            # A ratio is the median of each round's own ratio: a round's runs are back to back, so
            # when this shared machine slows down for a while, both sides of a round slow down.
            b, p = statistics.median(bare), statistics.median(pipe)
            table.append(row(f"{name}, bare loop", b, steps * 64, None, None))
            if floor:
                f = statistics.median(floor)
                table.append(row(f"{name}, Lightning alone (nothing of the pipeline)", f, steps * 64, None,
                                 statistics.median(x / y for x, y in zip(floor, bare))))
            table.append(row(f"{name}, pipeline", p, steps * 64, peak_rss_mb(),
                             statistics.median(x / y for x, y in zip(pipe, bare))))
            print(f"  {name}: data time {100 * statistics.median(data):.2f}% of the pipeline's loop", flush=True)
        print(f"  pipeline end of run (full val + test, checkpoints, reports, model): "
              f"median {statistics.median(end_of_run):.2f} s", flush=True)
        print("\n".join(table), flush=True)

        if not on_gpu:
            whole_processes(processed, tmp, args.threads, min(3, args.rounds))

        if not args.skip_presets:
            for preset, threshold in (("full", 0.99), ("fast99", 0.99)):
                started = time.perf_counter()
                run = pipeline_run(processed, tmp, [*common, f"experiment={preset}"])
                wall = time.perf_counter() - started
                t99 = time_to(run["_uri"], run["_run_id"], "val/acc", threshold, run["perf/train_steps_per_s"])
                samples_per_s = run["perf/train_steps_per_s"] * run["_batch_size"]
                gpu_mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if on_gpu else ""
                print(f"experiment={preset}: test/acc {run['test/acc']:.4f}, val_full/acc {run['val_full/acc']:.4f}, "
                      f"training loop {run['perf/train_loop_s']:.1f} s ({samples_per_s:.0f} samples/s), whole run "
                      f"{wall:.1f} s, time to 99% val/acc: {'not reached' if t99 is None else f'{t99:.1f} s'}, "
                      f"peak RSS {peak_rss_mb():.0f} MB{gpu_mem}", flush=True)


if __name__ == "__main__":
    main(prog="python -m mnist_pipeline.training.bench")
