"""Using trained models: finding them in the registry (`registry.py`), comparing a sweep's runs,
promoting the best, predicting digits in pictures, evaluating, serving over REST. Nothing here is
a dependency of the DVC pipeline: editing it never retrains."""
