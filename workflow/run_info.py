"""What makes a run reproducible: git commit, package versions, the machine."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "omegaconf", "timm", "faiss-cpu",
            "faiss-gpu", "wandb", "numpy", "scipy", "scikit-learn")


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of ``cwd``, ``-dirty`` appended where tracked files changed; outside a git checkout
    (a copy of the tree, a container) the ``SOURCE_COMMIT`` environment variable, else ``"unknown"``."""
    fallback = os.environ.get("SOURCE_COMMIT", "unknown")
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else fallback
    except (OSError, subprocess.SubprocessError):
        return fallback


def require_clean_tree(script: str, allow_dirty: bool = False, cwd: str | Path | None = None) -> str:
    """The commit of ``cwd``; ``SystemExit`` where the tree has uncommitted changes and not ``allow_dirty``: a
    benchmark result must name the code that produced it."""
    commit = git_commit(cwd)
    if commit.endswith("-dirty") and not allow_dirty:
        raise SystemExit(f"{script}: the working tree has uncommitted changes ({commit}): commit them first, so "
                         "that the result names the code that produced it (or pass --allow-dirty)")
    return commit


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description() -> str:
    """The GPU, or the CPU with what decides its speed here: its vector instructions (PyTorch's CPU
    capability), whether it runs bf16 natively (``workflow.precision``) and the threads used."""
    import torch

    from workflow.precision import native_bf16

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    bf16 = "native bf16" if native_bf16() else "no native bf16"
    return (f"cpu {platform.machine()} {cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, {bf16} "
            f"({torch.get_num_threads()} threads)")


def run_info() -> dict:
    return {"commit": git_commit(Path(__file__).resolve().parent), "packages": package_versions(),
            "python": platform.python_version(), "device": device_description()}


def run_info_of(run_dir: Path) -> dict:
    """The ``run_info.json`` a finished run wrote (commit, packages, device), or ``{}`` where it has none."""
    path = Path(run_dir) / "run_info.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_result(results_dir: Path, name: str, command: str, commit: str, wall_s: float, metrics: dict,
                 **extra: Any) -> dict[str, Any]:
    """Write and return ``<results_dir>/<name>.json``, what every benchmark result records: the command, the commit
    the run started from, this machine's device and packages, the date (UTC) and wall time, then ``extra`` and
    ``metrics``. A ``name`` with a folder (``probes/x``) writes ``<results_dir>/probes/x.json``, named ``x``."""
    info = run_info()
    record = {"name": Path(name).name, "command": command, "commit": commit, "device": info["device"],
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "wall_s": round(wall_s, 1),
              "packages": info["packages"], **extra, "metrics": metrics}
    path = results_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record
