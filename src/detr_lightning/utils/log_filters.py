"""Logging filters for the run's console and ``train.log`` (conf/hydra/default.yaml)."""

from __future__ import annotations

import logging

# Lightning messages that say nothing about the run: an advert, and notes on how the Trainer
# merged the callbacks this project passes in two places (the Trainer's and the module's).
_NOISE = (
    "💡 Tip:",
    "Trainer already configured with model summary callbacks",
    "The following callbacks returned in `LightningModule.configure_callbacks` will override",
)


class DropLightningNoise(logging.Filter):
    """Drops the records whose message starts with one of ``_NOISE``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_NOISE)


class BelowError(logging.Filter):
    """Keeps records below ERROR: the stdout console handler leaves errors to the stderr one,
    so that a job's error message is on stderr (where scripts and schedulers look) once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR
