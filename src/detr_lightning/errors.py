"""The base of the errors whose message is the whole story.

Configuration, data, checkpoint and divergence errors name what is wrong, where (the key, the
file, the record) and the fix. The entry points print such a message alone, without the
traceback through Lightning and Hydra that would bury it (:mod:`detr_lightning.utils.job_errors`;
``HYDRA_FULL_ERROR=1`` shows the traceback). Standard library only.
"""

from __future__ import annotations


class ExplainedError(Exception):
    """An error whose message (and notes) tells the user what to change."""


class MissingFileError(ExplainedError, FileNotFoundError):
    """A file or folder that a setting names (``input=``, ``onnx=``) does not exist."""


class ExistingOutputError(ExplainedError, FileExistsError):
    """An output folder already holds what this job would write."""


class UnreadableInputError(ExplainedError, ValueError):
    """None of the images an input names (``input=``, an evaluation split) could be read."""


class UnwritableFolderError(ExplainedError, OSError):
    """A folder this job must write into cannot be written (permissions, a read-only mount)."""
