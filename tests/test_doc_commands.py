"""Every fenced ``python train.py ...`` (and ``predict.py`` / ``export.py``) command of README.md and docs/*.md
composes with Hydra, so a renamed key breaks the build; presets stay short; every result JSON says what it is."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from tests.conftest import PROJECT_ROOT
from tests.helpers import load_benchmark
from workflow.precision import register_resolvers

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
ENTRY_POINTS = {"train.py": "train", "predict.py": "predict", "export.py": "export"}
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
PLACEHOLDER = re.compile(r"<[a-z_ ]+>")
SELECTIONS = {"test", "validation", "label_free", "fixed"}


def fenced_commands(text: str) -> list[str]:
    """The ``python <entry point> ...`` commands of the fenced blocks of ``text`` (continuation lines joined, each
    part of an ``a && b`` chain on its own)."""
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if len(words) >= 2 and words[0] == "python" and words[1] in ENTRY_POINTS:
                    commands.append(" ".join(shlex.quote(w) for w in words))
    return commands


def first_combination(overrides: list[str]) -> list[str]:
    """A multirun's overrides with every sweep (``a=1,2``) replaced by its first value."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for text, override in zip(overrides, parsed, strict=True):
        if override.is_sweep_override():
            key = text.split("=", 1)[0]
            out.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
        else:
            out.append(text)
    return out


def compose_command(command: str) -> DictConfig:
    """Compose ``command`` as its entry point would: ``--cfg``/``--resolve`` and ``-m`` dropped, sweeps at their
    first value, placeholders such as ``<date>`` filled in, Hydra's own config included (overrides may set
    ``hydra.*``)."""
    words = shlex.split(PLACEHOLDER.sub("x", command))[1:]
    config_name = ENTRY_POINTS[words[0]]
    overrides, skip = [], False
    for word in words[1:]:
        if skip:
            skip = False
        elif word in ("--cfg", "-c", "--package", "-p"):
            skip = True
        elif not word.startswith("-"):
            overrides.append(word)
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose(config_name, overrides=first_combination(overrides), return_hydra_config=True)


COMMANDS = [(path.relative_to(PROJECT_ROOT).as_posix(), command)
            for path in DOCS for command in fenced_commands(path.read_text())]


def test_the_docs_hold_commands_and_the_quick_start_is_unchanged() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(COMMANDS) >= 20
    assert ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && '
            "python train.py experiment=demo") in readme
    assert "python -m pytest -q\n" in readme
    assert len(readme.encode()) <= 12_000


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c[:70]}" for d, c in COMMANDS])
def test_a_documented_command_composes(doc: str, command: str) -> None:
    cfg = compose_command(command)
    assert cfg.task_name


def test_a_wrong_key_in_a_documented_command_fails() -> None:
    """The check can fail: a key that does not exist, a group option that does not exist, a bad sweep."""
    text = "```bash\npython train.py -m experiment=weak_kolektor model.no_such_key=1,2  # a sweep\n```\n"
    [command] = fenced_commands(text)
    with pytest.raises(Exception, match="no_such_key"):
        compose_command(command)
    with pytest.raises(Exception, match="no_such_preset"):
        compose_command("python train.py experiment=no_such_preset --cfg job")
    cfg = compose_command("python train.py -m experiment=weak_kolektor data.num_defective=5,10 --cfg job")
    assert cfg.data.num_defective == 5


@pytest.mark.parametrize("preset", sorted((PROJECT_ROOT / "conf" / "experiment").rglob("*.yaml")),
                         ids=lambda p: p.stem)
def test_a_preset_is_short_and_carries_no_tuning_log(preset: Path) -> None:
    lines = preset.read_text().splitlines()
    comments = [line for line in lines if line.strip().startswith("#") and line.strip() != "# @package _global_"]
    assert len(lines) <= 60, f"{preset.name}: {len(lines)} lines; history goes to benchmarks/notes/"
    assert len(comments) <= 10, f"{preset.name}: {len(comments)} comment lines"


RESULTS = sorted((PROJECT_ROOT / "benchmarks" / "results").rglob("*.json"))


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.relative_to(PROJECT_ROOT / "benchmarks").as_posix())
def test_a_result_says_what_it_is(path: Path) -> None:
    record = json.loads(path.read_text())
    assert record["name"] == path.stem
    assert record["selection"] in SELECTIONS
    methods = [record["method"]] if isinstance(record["method"], str) else record["method"]
    assert methods and all(isinstance(m, str) and m for m in methods)


def test_results_md_is_what_the_jsons_give() -> None:
    """benchmarks/RESULTS.md is generated: regenerate it (python benchmarks/results_table.py) when a result changes."""
    table = load_benchmark("results_table")
    assert (PROJECT_ROOT / "benchmarks" / "RESULTS.md").read_text() == table.page()


def test_the_results_table_shows_a_result_by_its_method_not_its_metric_names() -> None:
    figures = load_benchmark("results_table").figures
    metrics = {"pooled": {"ap": 0.5, "acc": 0.25, "nmi": 0.125},
               "folds": [{"ap": 0.5, "acc": 0.25, "nmi": 0.125}] * 3}
    assert figures("cluster", metrics) == ("acc 0.2500, nmi 0.1250",
                                           "acc 0.2500/0.2500/0.2500; nmi 0.1250/0.1250/0.1250")
    assert figures("weak", metrics)[0] == "ap 0.5000"
    assert figures(["cluster", "weak"], {"seconds": {"x": 1.5}}) == ("seconds.x 1.5000", "")


def test_the_readme_headline_figures_are_in_the_results_they_link() -> None:
    """Our figures in the README's results table (the third column) are pooled figures of the JSON files the row
    links, to 4 decimals: no figure typed in that a result does not hold."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "benchmarks/results/" in line]
    assert len(rows) >= 3
    for line in rows:
        ours = line.split("|")[3]
        pooled = set()
        for link in re.findall(r"\((benchmarks/results/[^)]+\.json)\)", line):
            pooled |= {f"{v:.4f}" for v in json.loads((PROJECT_ROOT / link).read_text())["metrics"]["pooled"].values()
                       if isinstance(v, float)}
        quoted = re.findall(r"\d\.\d{4}", ours)
        assert quoted and set(quoted) <= pooled, (line, sorted(set(quoted) - pooled))
