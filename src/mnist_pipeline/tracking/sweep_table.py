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


SEED = "seed"


def _mean_std(values: list[float]) -> str:
    """`0.9712 ± 0.0021` (sample std), or the one value alone when n is 1."""
    import statistics

    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def config_rows(table: list[dict], swept: list[str]) -> list[dict]:
    """For a sweep over `seed` (with another seed for some config): one row per config (every swept
    key but seed) with n, and mean ± std of val_full/acc and test/acc over its complete runs (not
    failed, not pruned), best mean first. [] for any other sweep."""
    import statistics

    if SEED not in swept:
        return []
    keys = [short_name(k) for k in swept if k != SEED]
    groups: dict[tuple, list[dict]] = {}
    for row in table:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    if all(len(rows) == 1 for rows in groups.values()):
        return []

    def complete(rows: list[dict], key: str) -> list[float]:
        return [r[key] for r in rows if r["status"] == "FINISHED" and r[key] is not None and not math.isnan(r[key])]

    configs = []
    for values, rows in groups.items():
        scores = complete(rows, SELECTION)
        configs.append({**dict(zip(keys, values)), "n": len(scores), f"{SELECTION} (mean)": _mean_std(scores),
                        "test/acc (mean)": _mean_std(complete(rows, "test/acc")),
                        "_mean": statistics.fmean(scores) if scores else -math.inf,
                        "_runs": [r.get("run") for r in rows], "_config": dict(zip(keys, values))})
    return sorted(configs, key=lambda c: -c["_mean"])


@dataclass
class Sweep:
    """A sweep's parent run, its points' runs, the swept keys and the table rows, read once."""
    parent: object
    points: list
    swept: list[str]
    rows: list[dict]

    def text(self) -> str:
        """The table with a header line (and, for a sweep over seeds, the configs' table): what
        `mnist compare` prints, and a sweep when it ends."""
        name = self.parent.info.run_name
        if not self.points:
            return f"sweep {name!r}: no runs"
        header = f"sweep {name!r}: {len(self.points)} runs, best first by {SELECTION}"
        text = f"{header}\n{format_table(self.rows)}"
        configs = config_rows(self.rows, self.swept)
        if configs:
            keys = ", ".join(short_name(k) for k in self.swept if k != SEED) or "none"
            text += (f"\n\n{len(configs)} configs ({keys}) over seeds, best first by mean {SELECTION} "
                     f"(mean ± std over the n complete runs)\n{format_table(configs)}")
        return text


def read_sweep(client, parent) -> Sweep:
    """The sweep whose parent run is `parent`."""
    points = point_runs(client, parent)
    swept = [k for k in parent.data.tags.get("swept_keys", "").split(",") if k]
    return Sweep(parent, points, swept, rows(client, points, swept))
