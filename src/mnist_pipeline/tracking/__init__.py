"""MLflow: where the store is (`store.py`), what every run records and how runs are found
(`runs.py`), the Lightning logger (`lightning_logger.py`), models as data (`logged_model.py`), and
two commands: `mnist ui` (`ui.py`) and `mnist runs` (`cleanup.py`). Only `lightning_logger.py`
imports Lightning."""
