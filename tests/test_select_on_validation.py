"""Choosing a setting on validation figures only (benchmarks/select_on_validation.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.select_on_validation import distinguishing_overrides, main, pick, rule, validation_figures


def result(name: str, command: str, val_ap: float, val_log_loss: float, test_ap: float) -> dict:
    fold = {"fold": 0, "ap": test_ap, "val_ap": val_ap, "val_log_loss": val_log_loss, "val_false_calls": 1}
    return {"name": name, "command": command, "commit": "abc", "device": "cpu", "method": "weak",
            "metrics": {"pooled": {"ap": test_ap}, "folds": [fold]}}


def test_highest_validation_ap_wins_and_log_loss_breaks_ties() -> None:
    assert pick([{"ap": 0.9, "log_loss": 0.1}, {"ap": 0.95, "log_loss": 0.9}]) == 1
    assert pick([{"ap": 1.0, "log_loss": 0.4}, {"ap": 1.0, "log_loss": 0.3}, {"ap": 0.99, "log_loss": 0.01}]) == 1
    assert pick([{"ap": 0.98, "log_loss": 0.4}, {"ap": 0.99, "log_loss": 0.5}], tie=0.02) == 0


def test_clustering_candidates_are_ranked_by_validation_acc_then_nmi() -> None:
    assert pick([{"acc": 0.8, "nmi": 0.9}, {"acc": 0.9, "nmi": 0.1}]) == 1
    assert pick([{"acc": 0.9, "nmi": 0.5}, {"acc": 0.9, "nmi": 0.7}, {"acc": 0.89, "nmi": 0.99}]) == 1
    # a preferred candidate wins a tie (within --tie), not a clear loss
    figures = [{"acc": 0.9194, "nmi": 0.85}, {"acc": 0.9181, "nmi": 0.84}]
    assert pick(figures, tie=0.01) == 0 and pick(figures, tie=0.01, prefer=1) == 1
    assert pick(figures, tie=0.001, prefer=1) == 0
    folds = [{"fold": 0, "acc": 0.1, "val_acc": 0.8, "val_nmi": 0.6, "val_step": 300},
             {"fold": 1, "acc": 0.2, "val_acc": 0.9, "val_nmi": 0.8, "val_step": 300}]
    assert validation_figures({"metrics": {"folds": folds}}) == pytest.approx({"acc": 0.85, "nmi": 0.7})
    assert "ACC" in rule([{"acc": 1.0, "nmi": 1.0}]) and "higher validation nmi" in rule([{"acc": 1.0, "nmi": 1.0}])
    with pytest.raises(ValueError, match="headline"):
        pick([{"acc": 0.9}, {"ap": 0.9}])


def test_figures_average_the_folds_and_read_the_older_validation_block() -> None:
    two = result("a", "x", 0.8, 0.4, 0.5)
    two["metrics"]["folds"].append({"fold": 1, "val_ap": 1.0, "val_log_loss": 0.2, "val_false_calls": 0})
    assert validation_figures(two) == pytest.approx({"ap": 0.9, "log_loss": 0.3, "false_calls": 1})
    older = {"name": "b", "metrics": {"folds": [{"ap": 0.7}]},
             "validation": {"ap_by_step": {"749": 0.1, "2249": 0.95, "1499": 0.5}, "log_loss_final": 0.35}}
    assert validation_figures(older) == {"ap": 0.95, "log_loss": 0.35}
    with pytest.raises(ValueError, match="val_fraction"):
        validation_figures({"name": "c", "metrics": {"folds": [{"ap": 0.7}]}})


def test_the_record_names_the_pick_by_validation_never_by_test(tmp_path: Path) -> None:
    base = "python train.py experiment=weak data.val_fraction=0.2"
    paths = []
    for r in (result("drop", f"{base} lr_drops=on", 1.0, 0.35, 0.5),  # worse on test, better on validation
              result("nodrop", f"{base} '~lr_drops'", 0.9, 0.2, 1.0)):
        paths.append(tmp_path / f"{r['name']}.json")
        paths[-1].write_text(json.dumps(r))
    main(["weak", *map(str, paths), "--out", str(tmp_path)])
    record = json.loads((tmp_path / "selection_weak.json").read_text())
    assert record["pick"] == "drop" and record["pick_overrides"] == ["lr_drops=on"]
    assert record["selection"] == "validation" and record["method"] == ["weak"]
    assert [c["validation"]["ap"] for c in record["candidates"]] == [1.0, 0.9]
    assert "0.5" not in json.dumps(record["candidates"])  # no test figure copied
    assert distinguishing_overrides(["a b c", "a c d"]) == [["b"], ["d"]]
