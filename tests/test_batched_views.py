"""Views made per batch on the training device (BatchedMultiCropViews) and pseudo-labels read fresh for each batch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from datamodules import NEUDataModule
from datamodules.synthetic import write_neu_cls
from datamodules.views import BatchedMultiCropViews, MultiCropViews, random_resized_boxes
from lightning_modules.cluster.plan import PseudoLabelViews
from tests.helpers import compose_cfg


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_boxes_follow_torchvisions_area_and_aspect_draws() -> None:
    boxes = random_resized_boxes(4000, 200, 200, (0.05, 0.4), generator=seeded())
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 200).all() and (boxes[:, 3] <= 200).all())
    area = w * h / 200**2
    assert 0.05 - 0.01 <= float(area.min()) and float(area.max()) <= 0.4 + 0.01
    assert 3 / 4 - 0.05 <= float((w / h).min()) and float((w / h).max()) <= 4 / 3 + 0.05
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(96, scale=(0.05, 0.4))
    reference = [crop.make_params([torch.zeros(1, 200, 200)]) for _ in range(4000)]
    areas = [p["height"] * p["width"] / 200**2 for p in reference]
    assert abs(float(area.mean()) - sum(areas) / len(areas)) < 0.01
    # the left edge is uniform over the room the width leaves
    room = (boxes[:, 0] / (200 - w + 1)).clamp(max=0.999)
    assert abs(float(room.mean()) - 0.5) < 0.03


def test_a_crop_that_never_fits_falls_back_to_the_centred_image() -> None:
    square = random_resized_boxes(64, 50, 50, (1.0, 1.0), generator=seeded())
    assert bool((square == torch.tensor([0.0, 0.0, 50.0, 50.0])).all())
    wide = random_resized_boxes(8, 40, 100, (1.0, 1.0), generator=seeded())  # ratio 2.5: cut to 4/3
    assert bool((wide == torch.tensor([23.0, 0.0, 23.0 + 53.0, 40.0])).all())


def test_whole_image_views_are_the_image_or_its_flips() -> None:
    images = torch.rand(64, 1, 20, 20)
    views = BatchedMultiCropViews(global_size=20, local_size=20, n_global=1, n_local=1, global_scale=(1.0, 1.0),
                                  local_scale=(1.0, 1.0), jitter=0.0, blur_p=0.0)(images, seeded())
    for view in views:
        flips = torch.stack([images, images.flip(-1), images.flip(-2), images.flip(-1).flip(-2)])
        match = ((view[None] - flips).abs().amax((2, 3, 4)) < 1e-5)  # (4, 64)
        assert bool((match.sum(0) >= 1).all())
        assert bool(match.any(1).all())  # every flip state occurs


def test_jitter_and_blur_match_torchvisions_functions() -> None:
    views = BatchedMultiCropViews(global_size=24, local_size=24, jitter=0.4)
    x = torch.rand(16, 1, 24, 24)
    got = views.color_jitter(x, seeded(5))
    b, c, order = torch.rand(3, 16, generator=seeded(5))
    b, c = 0.6 + 0.8 * b, 0.6 + 0.8 * c
    for i in range(16):
        if order[i] < 0.5:
            want = TF.adjust_contrast(TF.adjust_brightness(x[i], float(b[i])), float(c[i]))
        else:
            want = TF.adjust_brightness(TF.adjust_contrast(x[i], float(c[i])), float(b[i]))
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)
    got = views.blur(x, seeded(6))
    sigma = 0.1 + 1.9 * torch.rand(16, generator=seeded(6))
    size = max(3, 24 // 20 * 2 + 1)
    for i in range(16):
        torch.testing.assert_close(got[i], TF.gaussian_blur(x[i], [size, size], [float(sigma[i])] * 2),
                                   atol=1e-5, rtol=0)


def test_rgb_views_turn_gray_with_gray_p() -> None:
    images = torch.rand(200, 3, 16, 16)
    view = BatchedMultiCropViews(global_size=16, local_size=16, n_global=1, n_local=0, jitter=0.0, blur_p=0.0,
                                 gray_p=0.3)(images, seeded())[0]
    gray = (view[:, 0] - view[:, 1]).abs().amax((1, 2)) < 1e-6
    assert 0.2 < float(gray.float().mean()) < 0.4


def test_the_same_generator_gives_the_same_views_and_sizes_follow_the_config() -> None:
    views = BatchedMultiCropViews(global_size=24, local_size=12, n_global=2, n_local=6)
    images = torch.rand(4, 1, 40, 40)
    first, again, other = views(images, seeded(1)), views(images, seeded(1)), views(images, seeded(2))
    assert [tuple(v.shape) for v in first] == [(4, 1, 24, 24)] * 2 + [(4, 1, 12, 12)] * 6
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert all(0.0 <= float(v.min()) and float(v.max()) <= 1.0 for v in first)


@pytest.fixture(scope="module")
def neu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_neu_cls(tmp_path_factory.mktemp("neu") / "NEU-CLS", per_class=6, size=(32, 32), seed=3)


class RecordingModule(L.LightningModule):
    """Records, at every training step, the batch's pseudo-labels against the plan's current ones,
    and the views' sizes; sets new pseudo-labels after step 2."""

    def __init__(self, training_plan: PseudoLabelViews) -> None:
        super().__init__()
        self.training_plan = training_plan
        self.layer = torch.nn.Linear(1, 6)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.view_shapes: list[tuple[int, ...]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        table = self.training_plan.pseudo_labels
        self.seen.append((batch["pseudo_label"].clone(), table[batch["index"]].clone()))
        self.view_shapes = [tuple(v.shape) for v in batch["views"]]
        if self.global_step == 2:
            self.training_plan.set_pseudo_labels(torch.arange(len(table)) % 6)
        return self.layer(torch.stack([v.mean() for v in batch["views"]])[:, None]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("batched", [False, True])
def test_workers_train_on_the_current_pseudo_labels(neu_root: Path, batched: bool) -> None:
    """With loader workers (which hold a copy of the dataset and prefetch batches) every step still trains on the
    assignment in force at that step; with BatchedMultiCropViews the views are made at transfer."""
    views = (BatchedMultiCropViews if batched else MultiCropViews)(global_size=16, local_size=8, n_global=1,
                                                                   n_local=2)
    dm = NEUDataModule(root=neu_root, image_size=(32, 32), num_workers=2)
    model = RecordingModule(PseudoLabelViews(views, batch_size=4))
    trainer = L.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert len(model.seen) == 8
    for got, current in model.seen:
        assert torch.equal(got, current)
    assert any(bool(current.any()) for _, current in model.seen[3:])  # the new labels reached training
    assert model.view_shapes == [(4, 1, 16, 16), (4, 1, 8, 8), (4, 1, 8, 8)]
    item = trainer.train_dataloader.dataset[0]
    assert ("image" in item) == batched and ("views" in item) != batched
    if batched:
        assert item["image"].dtype == torch.uint8


def test_loader_workers_see_new_pseudo_labels(neu_root: Path) -> None:
    dm = NEUDataModule(root=neu_root, image_size=(32, 32))
    dm.setup("fit")
    plan = PseudoLabelViews(MultiCropViews(16, 8, 1, 1), batch_size=4)
    views_set = plan.train_dataloader(dm.train_set, 1, 0, 0, 0).dataset
    loader = DataLoader(views_set, batch_size=len(views_set), num_workers=1, persistent_workers=True)
    assert not bool(next(iter(loader))["pseudo_label"].any())
    plan.set_pseudo_labels(torch.arange(len(views_set)) % 6)
    assert torch.equal(next(iter(loader))["pseudo_label"], torch.arange(len(views_set)) % 6)


def test_gpu_presets_make_views_on_the_device_and_cpu_presets_in_the_loader() -> None:
    for experiment, target in [("cluster_neu", BatchedMultiCropViews), ("cluster_dagm", BatchedMultiCropViews),
                               ("cluster_neu_cpu", MultiCropViews), ("cluster_severstal_2c_cpu", MultiCropViews)]:
        cfg = compose_cfg([f"experiment={experiment}"])
        assert cfg.model.training_plan.views._target_ == f"{target.__module__}.{target.__name__}", experiment


def test_views_draws_differ_per_batch_and_repeat_after_a_resume(neu_root: Path) -> None:
    dm = NEUDataModule(root=neu_root, image_size=(32, 32))
    dm.setup("fit")

    def plan_of(rank: int = 0) -> PseudoLabelViews:
        plan = PseudoLabelViews(BatchedMultiCropViews(16, 8, 1, 1), batch_size=4)
        plan.train_dataloader(dm.train_set, 2, rank, 0, seed=0)
        return plan

    def draw(plan: PseudoLabelViews, step: int) -> float:
        return float(torch.rand(1, generator=plan.views_generator(torch.device("cpu"), step)))

    plan = plan_of()
    first, second = draw(plan, 5), draw(plan, 5)  # two batches of step 5 (gradient accumulation)
    third = draw(plan, 6)
    assert len({first, second, third}) == 3
    resumed = plan_of()
    assert (draw(resumed, 5), draw(resumed, 5)) == (first, second)
    assert draw(plan_of(rank=1), 5) != first
