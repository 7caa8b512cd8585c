"""A sweep's points as a table, best first by val_full/acc (pruned points after the complete ones,
failed and diverged points last): what `mnist compare` prints, and what a sweep prints when it ends."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mnist_pipeline.tracking.runs import SELECTION, point_runs, short_name


def _sort_key(run) -> tuple:
    """Complete points best first, then pruned ones (stopped early: not comparable), then failed."""
    value = run.data.metrics.get(SELECTION)
    ok = run.info.status == "FINISHED" and value is not None and not math.isnan(value)
    if not ok:
        return (2, 0.0, run.info.run_name)
    return (1 if "pruned_at_step" in run.data.tags else 0, -value, run.info.run_name)


def rows(client, children, swept: list[str]) -> list[dict]:
    table = []
    for run in sorted(children, key=_sort_key):
        val_history = client.get_metric_history(run.info.run_id, "val/acc")
        status = run.info.status
        if "diverged_at_step" in run.data.tags:
            status += f" (diverged at step {run.data.tags['diverged_at_step']})"
        elif "pruned_at_step" in run.data.tags:
            status = f"pruned at step {run.data.tags['pruned_at_step']}"
        table.append({
            "run": run.info.run_name,
            **{short_name(k): run.data.params.get(k, "") for k in swept},
            SELECTION: run.data.metrics.get(SELECTION),
            "best val/acc": max((m.value for m in val_history), default=None),
            "test/acc": run.data.metrics.get("test/acc"),
            "steps/s": run.data.metrics.get("perf/train_steps_per_s"),
            "status": status,
            "_curve": sorted((m.step, m.value) for m in val_history),
        })
    return table


def format_table(table: list[dict]) -> str:
    columns = [c for c in table[0] if not c.startswith("_")]

    def cell(value) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else (f"{value:.1f}" if value >= 10 else f"{value:.4f}")
        return "-" if value is None else str(value)

    cells = [[cell(r[c]) for c in columns] for r in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


@dataclass
class Sweep:
    """A sweep's parent run, its points' runs, the swept keys and the table rows, read once."""
    parent: object
    points: list
    swept: list[str]
    rows: list[dict]

    def text(self) -> str:
        """The table with a header line: what `mnist compare` prints, and a sweep when it ends."""
        name = self.parent.info.run_name
        if not self.points:
            return f"sweep {name!r}: no runs"
        header = f"sweep {name!r}: {len(self.points)} runs, best first by {SELECTION}"
        return f"{header}\n{format_table(self.rows)}"


def read_sweep(client, parent) -> Sweep:
    """The sweep whose parent run is `parent`."""
    points = point_runs(client, parent)
    swept = [k for k in parent.data.tags.get("swept_keys", "").split(",") if k]
    return Sweep(parent, points, swept, rows(client, points, swept))
