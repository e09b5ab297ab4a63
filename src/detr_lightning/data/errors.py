"""Exceptions raised by the data pipeline.

Both take a single, self-contained message: DataLoader workers re-raise an exception in the main
process by calling ``type(exc)(message)``, so the message must name the file, the record and the
fix on its own.
"""

from detr_lightning.errors import ExplainedError


class DatasetFormatError(ExplainedError, ValueError):
    """An annotation file or dataset folder is missing, malformed or inconsistent."""


class ImageLoadError(ExplainedError, RuntimeError):
    """An image referenced by an annotation file is missing, unreadable, corrupt or truncated."""
