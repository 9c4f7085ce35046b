"""What went wrong in a run, said at its end: a collapsed stage, an empty cluster, pseudo-labels that never changed.

A module or callback calls :func:`add_warning` when it sees such a failure: the message is warned at once (a log
line) and kept on the module (``run_warnings``). :class:`workflow.gathering.FoldResultWriter` saves the list with
the fold's result, and ``train.py`` prints every fold's warnings after the results table and writes them to
``metrics.json`` as ``warnings`` (an empty list where nothing went wrong).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lightning.pytorch.utilities import rank_zero_warn

#: the attribute of a LightningModule that holds its warnings of the current fold
ATTRIBUTE = "run_warnings"


def add_warning(module: object, message: str) -> None:
    """Warn ``message`` now and keep it on ``module`` for the end of the run (once: repeats are dropped)."""
    kept = getattr(module, ATTRIBUTE, None)
    if kept is None:
        kept = []
        setattr(module, ATTRIBUTE, kept)
    if message not in kept:
        kept.append(message)
    rank_zero_warn(message)


def module_warnings(module: object) -> list[str]:
    """The warnings kept on ``module`` (a copy)."""
    return list(getattr(module, ATTRIBUTE, None) or [])


def fold_warnings(results: Sequence[Mapping]) -> list[str]:
    """Every fold's warnings, each prefixed by its fold (``results``: ``train.py``'s per-fold results)."""
    return [f"fold {r['fold']}: {w}" for r in results for w in (r.get("warnings") or [])]


def warnings_text(messages: Sequence[str]) -> str:
    """The block printed at the end of a run: nothing where there is no warning."""
    if not messages:
        return ""
    return "\n".join([f"WARNING: this run has {len(messages)} problem(s) (also in metrics.json, 'warnings'):",
                      *(f"  - {m}" for m in messages)])
