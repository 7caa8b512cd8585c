"""The compare heatmap tells a failed point from a point never tried (an Optuna search tries some
cells of the lr x batch grid only) and from a point stopped early (sweep.prune)."""

import math

from mnist_pipeline.serving.compare import heatmap


def test_heatmap_cells_say_failed_or_not_run():
    def point(lr, bs, acc, status="FINISHED"):
        return {"lr": str(lr), "bs": str(bs), "val_full/acc": acc, "status": status}

    table = [point(0.05, 32, 0.91), point(0.05, 32, 0.93), point(0.5, 64, None), point(0.15, 64, float("nan")),
             point(0.15, 32, 0.95), point(0.5, 32, 0.11, "pruned at step 25")]
    grid, labels = heatmap(table, [0.05, 0.15, 0.5], [32, 64])
    assert labels == [["0.9300", "0.9500", "pruned"],
                      ["not run", "failed", "failed"]]
    assert grid[0][0] == 0.93 and math.isnan(grid[1][0])


def test_a_sweep_over_seeds_is_grouped_by_config_with_mean_and_std():
    from mnist_pipeline.tracking.sweep_table import config_rows

    def point(lr, seed, acc, test, status="FINISHED"):
        return {"lr": str(lr), "seed": str(seed), "val_full/acc": acc, "test/acc": test, "status": status}

    table = [point(0.05, 0, 0.90, 0.89), point(0.05, 1, 0.92, 0.91), point(0.05, 2, 0.94, 0.93),
             point(0.5, 0, 0.99, 0.98), point(0.5, 1, None, None, "FAILED (diverged at step 2)"),
             point(0.5, 2, 0.10, 0.10, "pruned at step 25"),
             point(0.15, 0, 0.95, 0.96), point(0.15, 1, 0.97, 0.95), point(0.15, 2, 0.96, 0.94)]
    rows = config_rows(table, ["optimizer.lr", "seed"])
    assert [(r["lr"], r["n"], r["val_full/acc (mean)"], r["test/acc (mean)"]) for r in rows] == [
        ("0.5", 1, "0.9900", "0.9800"),                  # one surviving seed: n=1, no std
        ("0.15", 3, "0.9600 ± 0.0100", "0.9500 ± 0.0100"),
        ("0.05", 3, "0.9200 ± 0.0200", "0.9100 ± 0.0200"),
    ]
    assert config_rows(table, ["optimizer.lr"]) == [], "no seed swept: no configs' table"
    single = [r for r in table if r["seed"] == "0"]
    assert config_rows(single, ["optimizer.lr", "seed"]) == [], "one seed per config: as today"
