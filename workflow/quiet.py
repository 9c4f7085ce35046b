"""Third-party console noise filtered where a run starts (the project's own causes are fixed at the source).

Filtered: PyTorch's ``isinstance(treespec, LeafSpec) is deprecated`` (raised inside Lightning), Lightning's
``Total length of ... across ranks is zero`` (an empty validation loader when no validation data is held out; an
empty *training* loader is refused by :mod:`datamodules.checks` instead), Lightning's ``weights_only was not set``
(a checkpoint saved by a library callback) and its tips advertising other products; the ONNX exporter's INFO lines
(``onnxscript``, ``onnx_ir``: hundreds per export, in predict.py and export.py).
"""

from __future__ import annotations

import logging
import warnings

#: (message regex, category) of warnings to ignore
WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r".*isinstance\(treespec, LeafSpec\)", Warning),
    (r".*across ranks is zero", Warning),
    (r".*does not have many workers", Warning),
)
#: log messages (substrings) dropped
LOG_NOISE: tuple[str, ...] = ("💡 Tip:", "`weights_only` was not set", "across ranks is zero")
#: loggers of which only warnings and errors are shown
QUIET_LOGGERS = ("onnx_ir", "onnxscript")


class NoiseFilter(logging.Filter):
    """Drop log records whose message contains one of :data:`LOG_NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in LOG_NOISE)


def quiet_third_party() -> None:
    """Install the warning filters and put :class:`NoiseFilter` on every configured log handler (idempotent)."""
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger))]
    for logger in loggers:
        if not any(isinstance(f, NoiseFilter) for f in logger.filters):
            logger.addFilter(NoiseFilter())
        for handler in logger.handlers:
            if not any(isinstance(f, NoiseFilter) for f in handler.filters):
                handler.addFilter(NoiseFilter())
