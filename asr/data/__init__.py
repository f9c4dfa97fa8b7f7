"""Data: manifests, corpus preparers, datasets, length-bucketed batching, the Lightning DataModule."""
