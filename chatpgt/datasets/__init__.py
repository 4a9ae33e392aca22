"""Datasets people can trust and share: Parquet and Hugging Face formats, the dataset card, bias
figures, length balancing, near-duplicate control and imports (``docs/datasets.md``)."""
