"""Logger construction: wandb that goes offline by itself when no account is configured."""

from __future__ import annotations

import logging
import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)

_OFFLINE_MODES = ("offline", "dryrun", "disabled")


def wandb_credentials_present() -> bool:
    """True when ``WANDB_API_KEY`` is set or a netrc holds an ``api.wandb.ai`` entry
    (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_offline(mode: str = "auto") -> bool:
    """Whether to run wandb offline.

    mode "online"/"offline" are taken literally; "auto" is offline when ``WANDB_MODE`` says so
    or when no credentials are configured (then runs are synced later with ``wandb sync``).
    """
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"logger.wandb.mode={mode!r}; use auto, online or offline")
    if mode != "auto":
        return mode == "offline"
    if os.environ.get("WANDB_MODE", "").lower() in _OFFLINE_MODES:
        return True
    return not wandb_credentials_present()


def wandb_logger(mode: str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """A Lightning ``WandbLogger``; ``kwargs`` go to it (project, name, group, tags, ...)."""
    offline = resolve_wandb_offline(mode)
    os.makedirs(save_dir, exist_ok=True)
    if offline:
        log.info(
            "wandb offline (no WANDB_API_KEY / `wandb login`); upload later with "
            "`wandb sync %s/wandb/offline-run-*`",
            save_dir,
        )
    return WandbLogger(offline=offline, save_dir=save_dir, **kwargs)
