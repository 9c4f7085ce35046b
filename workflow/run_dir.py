"""A per-process id in every run folder's name, so that runs started in the same second never share a folder.

``conf/hydra/default.yaml`` names a run ``<date>_<time>_${run_id:}``: six random hex digits drawn once per
process (and cached in the config, so a sweep's jobs and a relaunched DDP rank keep the folder they were given).
Two jobs of a cluster array started in the same second on two hosts (same PID possible) still get two folders.
"""

from __future__ import annotations

import secrets

from omegaconf import OmegaConf

RESOLVER = "run_id"
_RUN_ID: str | None = None


def run_id() -> str:
    """This process's id: 6 random hex digits, the same on every call."""
    global _RUN_ID
    if _RUN_ID is None:
        _RUN_ID = secrets.token_hex(3)
    return _RUN_ID


def register_run_id() -> None:
    """Make ``${run_id:}`` known to OmegaConf (idempotent); call before Hydra resolves ``hydra.run.dir``."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, run_id, use_cache=True)
