"""What a real training run leaves for people to look at: the test set's confusion matrix and most
confident mistakes, written and logged for the best checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

FILES = ("confusion_matrix.png", "confusion.csv", "most_confident_errors.png")


def test_training_writes_and_logs_them_for_the_best_checkpoint(trained_real):
    from mlflow.tracking import MlflowClient

    plots = trained_real.reports / "plots"
    rows = [line.split(",") for line in (plots / "confusion.csv").read_text().splitlines()[1:]]
    assert len(rows) == 10000 and rows[0][0] == str(trained_real.test_labels[0])
    accuracy = np.mean([a == p for a, p in rows])
    assert accuracy == pytest.approx(trained_real.metrics["test/acc"], abs=1e-4), "the model test/acc was measured on"
    logged = {a.path for a in MlflowClient(trained_real.uri).list_artifacts(trained_real.run_id, "reports/plots")}
    assert {f"reports/plots/{name}" for name in FILES} <= logged
