"""Data: local files and TFDS datasets, stored as array_record, read with grain."""
