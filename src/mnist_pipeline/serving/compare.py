"""`mnist compare [--sweep NAME]`: the runs of a sweep, side by side.

Prints the sweep's points best first by val_full/acc (the selection metric; failed and diverged
points last), draws every point's val/acc curve on one chart and, for a learning rate x batch size
grid, a heatmap of val_full/acc, and logs both pictures to the sweep's parent run. Ends with the
address of the MLflow UI's own compare page for the points (`--ui-url`, default `make ui`'s).
`--promote` then registers the best point's model as the champion (see promote.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_pipeline.serving.registry import DEFAULT_MODEL_NAME
from mnist_pipeline.tracking.runs import SELECTION, find_sweep, short_name
from mnist_pipeline.tracking.store import StoreError, add_store_args, experiment_id, experiment_name, open_store
from mnist_pipeline.tracking.sweep_table import read_sweep
from mnist_pipeline.tracking.ui import UI_URL, compare_page


def heatmap(table: list[dict], lrs: list[float], batches: list[int]):
    """(val_full/acc per batch x lr cell, NaN where none; each cell's label). A cell with no run
    says "not run" (an Optuna search tries some cells only), one whose runs failed "failed", one
    whose runs were stopped early (sweep.prune) "pruned"."""
    import numpy as np

    lr, bs = short_name("optimizer.lr"), short_name("data.batch_size")
    grid = np.full((len(batches), len(lrs)), np.nan)
    tried = np.full(grid.shape, "not run", dtype=object)
    for r in table:
        cell = batches.index(int(r[bs])), lrs.index(float(r[lr]))
        if str(r.get("status", "")).startswith("pruned"):
            tried[cell] = "pruned"
            continue
        tried[cell] = "failed" if tried[cell] == "not run" else tried[cell]
        if r[SELECTION] is not None and not np.isnan(r[SELECTION]):
            grid[cell] = r[SELECTION] if np.isnan(grid[cell]) else max(grid[cell], r[SELECTION])
    labels = [[f"{v:.4f}" if not np.isnan(v) else tried[i, j] for j, v in enumerate(row)]
              for i, row in enumerate(grid)]
    return grid, labels


def plot(table: list[dict], swept: list[str], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mnist_pipeline.atomic import write_png

    def save(fig, name: str) -> Path:
        write_png(out_dir / name, fig)
        return out_dir / name

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in table:
        if r["_curve"]:
            label = " ".join(f"{short_name(k)}={r[short_name(k)]}" for k in swept) or r["run"]
            ax.plot(*zip(*r["_curve"]), marker=".", label=label)
    ax.set(xlabel="training step", ylabel="val/acc", title="Validation accuracy of every sweep point")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths = [save(fig, "val_acc_curves.png")]

    if set(swept) >= {"optimizer.lr", "data.batch_size"}:
        lr, bs = short_name("optimizer.lr"), short_name("data.batch_size")
        lrs = sorted({float(r[lr]) for r in table})
        batches = sorted({int(r[bs]) for r in table})
        grid, labels = heatmap(table, lrs, batches)
        fig, ax = plt.subplots(figsize=(1.4 * len(lrs) + 2, 1.0 * len(batches) + 1.5))
        im = ax.imshow(grid, cmap="viridis", origin="lower")
        ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
        ax.set_yticks(range(len(batches)), [str(v) for v in batches])
        ax.set(xlabel="learning rate", ylabel="batch size", title=SELECTION)
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, labels[i][j], ha="center", va="center", color="w" if not np.isnan(v) else "k", fontsize=8)
        fig.colorbar(im, ax=ax)
        paths.append(save(fig, "val_full_acc_heatmap.png"))
    return paths


def compare(tracking_uri: str | None, experiment: str | None, sweep: str | None,
            out: str | None) -> tuple[str, list[Path], str, list[str], str]:
    """(the table as text, the pictures, the parent run's id, the points' run ids, the experiment id)."""
    from mnist_pipeline.config import project_root

    client, _ = open_store(tracking_uri)
    parent = find_sweep(client, experiment_id(client, experiment_name(experiment)), sweep)
    points = read_sweep(client, parent)
    if not points.points:
        raise StoreError(f"the sweep {parent.info.run_name!r} has no runs")
    if all(r.info.status in ("FAILED", "KILLED") for r in points.points):  # every point over, none with a result
        states = ", ".join(sorted({r["status"] for r in points.rows}))
        raise StoreError(f"every point of the sweep {parent.info.run_name!r} failed ({len(points.points)} runs: "
                         f"{states}): nothing to compare; see its job logs under the sweep folder")
    out_dir = Path(out) if out else project_root() / "outputs" / "compare" / parent.info.run_id
    pictures = plot(points.rows, points.swept, out_dir)
    for path in pictures:
        client.log_artifact(parent.info.run_id, str(path), "compare")
    return points.text(), pictures, parent.info.run_id, [r.info.run_id for r in points.points], \
        parent.info.experiment_id


def main(argv: list[str] | None = None, prog: str = "mnist compare") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_store_args(parser)
    parser.add_argument("--sweep", help="the sweep's parent run name (default: the newest sweep)")
    parser.add_argument("--out", help="folder for the pictures (default: outputs/compare/<parent run id>)")
    parser.add_argument("--ui-url", default=UI_URL, help=f"the MLflow UI's address (default: {UI_URL}, make ui's)")
    parser.add_argument("--promote", action="store_true", help="register the sweep's best run's model and make it "
                        "the champion (as `mnist promote --sweep NAME`)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="with --promote: the registered model "
                        f"(default: {DEFAULT_MODEL_NAME})")
    args = parser.parse_args(argv)
    try:
        text, pictures, parent_run_id, run_ids, experiment = compare(
            args.tracking_uri, args.experiment, args.sweep, args.out)
        print(text)
        for path in pictures:
            print(f"wrote {path} (also logged to the sweep's parent run)")
        print(f"compared in the MLflow UI (make ui): {compare_page(args.ui_url, experiment, run_ids)}")
        if args.promote:
            from mnist_pipeline.serving.promote import promote

            print(promote(args.tracking_uri, args.experiment, parent_run_id=parent_run_id,
                          model_name=args.model_name))
    except StoreError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(prog="python -m mnist_pipeline.serving.compare")
