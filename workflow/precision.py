"""bfloat16 on a CPU only where it runs natively: the ``${cpu_precision:...}`` config resolver.

The CPU presets train in ``bf16-mixed``: on a CPU with AVX512-BF16 and AMX that was about 3x faster than float32.
On a CPU with no bf16 support in oneDNN (AVX2 only) bf16 is emulated and the same steps run many times slower than in
float32 (``benchmarks/results/cpu_precision_*.json``). The presets
therefore ask for ``precision: ${cpu_precision:bf16-mixed,${trainer.accelerator}}``: the given precision where the
CPU runs bf16 natively or the trainer is on a GPU (``trainer=gpu``), ``32-true`` on a CPU that does not. An explicit
``trainer.precision=...`` on the command line still wins.
"""

from __future__ import annotations

import functools
import logging

import torch
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

RESOLVER = "cpu_precision"
FALLBACK = "32-true"


def native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions and matrix products with this CPU's own instructions (PyTorch's test,
    ``torch.ops.mkldnn._is_mkldnn_bf16_supported``: AVX512 BW/VL/DQ or AVX-NE-CONVERT on x86, the BF16 extension on
    Arm); False where PyTorch was built without oneDNN. Plain AVX512 without AVX512-BF16 / AMX counts as native:
    not measured here, it falls outside the fallback."""
    if not torch.backends.mkldnn.is_available():
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` runs on the CPU here (``auto``: where no GPU is visible)."""
    if accelerator == "auto":
        return not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return accelerator == "cpu"


def cpu_precision(preferred: str = "bf16-mixed", accelerator: str = "cpu") -> str:
    """``preferred`` where the run is not on the CPU (``accelerator``, the trainer's), where ``preferred`` is not a
    bf16 precision, or where the CPU runs bf16 natively; else ``32-true`` (logged once per process: a config is
    resolved several times in a run)."""
    if not on_cpu(str(accelerator)) or "bf16" not in str(preferred) or native_bf16():
        return str(preferred)
    _warn_fallback(str(preferred))
    return FALLBACK


@functools.cache
def _warn_fallback(preferred: str) -> None:
    log.warning("trainer.precision: %s asked for, but this CPU (%s) has no native bfloat16 (emulated bf16 runs "
                "6-120x slower than float32 in benchmarks/results/cpu_precision_avx2.json): using %s; "
                "trainer.precision=%s forces it",
                preferred, torch.backends.cpu.get_cpu_capability(), FALLBACK, preferred)


def register_resolvers() -> None:
    """Make ``${cpu_precision:...}`` known to OmegaConf (idempotent); call before a config is resolved."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, cpu_precision)
