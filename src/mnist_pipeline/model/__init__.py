"""The networks (`architectures/`, looked up by name) and the LightningModule that trains them
(`module.py`). Importing `mnist_pipeline.model.architectures` does not import Lightning."""
