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
