"""Print the composed config as a tree at the start of a run (one branch per config group)."""

from __future__ import annotations

from collections.abc import Sequence

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

FIRST = ("data", "model", "optimizer", "trainer", "callbacks", "logger", "paths")


def config_tree(cfg: DictConfig, order: Sequence[str] = FIRST, resolve: bool = True) -> rich.tree.Tree:
    """A rich tree: the groups in ``order`` first, then every other top-level key, each as YAML."""
    tree = rich.tree.Tree("config", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=resolve) if OmegaConf.is_config(value) else str(value)
        tree.add(str(key)).add(rich.syntax.Syntax(text, "yaml"))
    return tree


def print_config_tree(cfg: DictConfig, resolve: bool = True) -> None:
    rich.print(config_tree(cfg, resolve=resolve))
