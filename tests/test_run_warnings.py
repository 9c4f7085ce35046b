"""Failures said at the end of a run: the clustering's health checks and the warnings' way into metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from clustering.health import (
    STUCK_NMI,
    clustering_warnings,
    empty_cluster_warning,
    empty_test_clusters_warning,
    merged_clusters_warning,
    stuck_labels_warning,
)
from workflow.report import write_report
from workflow.run_warnings import add_warning, fold_warnings, module_warnings, warnings_text


def record(step: int, sizes: list[int], nmi: float | None = None) -> dict:
    return {"step": step, "sizes": sizes, **({"nmi_to_previous": nmi} if nmi is not None else {})}


def test_an_empty_cluster_is_named_with_its_count_and_last_step() -> None:
    history = [record(0, [5, 0, 5]), record(100, [4, 3, 3], 0.5), record(200, [10, 0, 0], 0.4)]
    message = empty_cluster_warning(history, 3)
    assert message is not None and "2 of 3 clusters empty" in message and "2 of 3 reassignments" in message
    assert "step 200" in message
    assert empty_cluster_warning([record(0, [5, 5, 5])], 3) is None


def test_pseudo_labels_that_never_change_are_a_warning_and_changing_ones_are_not() -> None:
    stuck = [record(0, [3, 3]), record(100, [3, 3], 1.0), record(200, [3, 3], STUCK_NMI)]
    message = stuck_labels_warning(stuck)
    assert message is not None and "never changed" in message and "all 2 reassignments" in message
    assert stuck_labels_warning([record(0, [3, 3]), record(100, [3, 3], 1.0), record(200, [3, 3], 0.6)]) is None
    assert stuck_labels_warning([record(0, [3, 3]), record(100, [3, 3], 1.0)]) is None  # one comparison: too few
    assert len(clustering_warnings([record(0, [6, 0]), record(1, [6, 0], 1.0), record(2, [6, 0], 1.0)], 2)) == 2


def test_a_sharp_change_that_grows_the_largest_cluster_is_a_merge_warning() -> None:
    """NEU fold 2's trace (``benchmarks/notes/cluster_neu_cpu.md``): weight 1 at step 150 merged two classes; fold 0's
    dip at step 50 changed the partition as sharply without a grown cluster, and recovered: no warning."""
    fold2 = [record(0, [226, 202, 174, 198, 200, 200]), record(100, [226, 202, 173, 198, 200, 201], 0.997),
             {**record(150, [392, 165, 127, 165, 142, 209], 0.811), "descriptor_weight": 1.0},
             record(200, [396, 164, 129, 163, 142, 206], 0.978)]
    message = merged_clusters_warning(fold2)
    assert message is not None and "step 150" in message and "226 to 392" in message
    assert "weight chosen there: 1" in message
    assert "merged" in clustering_warnings(fold2, 6)[0]
    fold0 = [record(0, [225, 200, 200, 175, 200, 200]), record(50, [216, 210, 200, 180, 200, 194], 0.804),
             record(100, [225, 200, 200, 175, 200, 200], 0.807)]
    assert merged_clusters_warning(fold0) is None
    grown_but_gradual = [record(0, [200, 200, 200]), record(50, [320, 140, 140], 0.95)]
    assert merged_clusters_warning(grown_but_gradual) is None


def test_a_classifier_leaving_clusters_empty_on_the_test_images_is_a_warning() -> None:
    """The debug run of cluster_folder_cpu a trial user made: 4 of 6 clusters empty on 240 test images."""
    message = empty_test_clusters_warning([226, 0, 0, 14, 0, 0])
    assert message is not None and "used 2 of its 6 clusters" in message and "largest took 94%" in message
    assert empty_test_clusters_warning([40, 40, 40, 40, 40, 40]) is None
    assert empty_test_clusters_warning([3, 2, 0, 0, 1, 0]) is None  # 6 images for 6 clusters: empties by chance


def test_warnings_are_kept_once_per_module_and_listed_by_fold_in_metrics_json(tmp_path: Path) -> None:
    class Module:
        pass

    module = Module()
    assert module_warnings(module) == []
    add_warning(module, "stage 'localization' ended dark")
    add_warning(module, "stage 'localization' ended dark")
    assert module_warnings(module) == ["stage 'localization' ended dark"]
    results = [{"fold": 0, "metrics": {"ap": 0.5}, "warnings": module_warnings(module)},
               {"fold": 2, "metrics": {"ap": 0.9}, "warnings": []}]
    messages = fold_warnings(results)
    assert messages == ["fold 0: stage 'localization' ended dark"]
    write_report(tmp_path, results, {"ap": 0.7}, ["ap"], extra={"warnings": messages})
    assert json.loads((tmp_path / "metrics.json").read_text())["warnings"] == messages
    assert "1 problem" in warnings_text(messages) and messages[0] in warnings_text(messages)
    assert warnings_text([]) == ""
