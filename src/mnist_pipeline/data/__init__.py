"""MNIST on disk: the IDX format (`idx.py`), where the bytes come from (`sources.py`), the `fetch`
and `split` DVC stages, and the split files every later step reads (`processed.py`). No Lightning,
no MLflow: the DVC stages `fetch` and `split` depend on this folder alone (plus `config.py` and
`atomic.py`)."""
