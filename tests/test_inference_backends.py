"""predict.py's backends (workflow/inference_backends.py): torch, torchscript and ONNX Runtime give the same outputs;
bf16 (where the CPU runs it natively) stays within a stated tolerance of float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_modules.weak.networks import WeakDefectNet
from workflow.inference_backends import Bf16Net, with_backend
from workflow.precision import native_bf16

#: bf16 against float32 on the heat map (in [0, 1]) and on DNet's logit: bf16 keeps ~3 significant digits
BF16_HEATMAP_ATOL = 0.02
BF16_LOGIT_ATOL = 0.05


class Holder(nn.Module):
    """Stands in for the LightningModule: what the backends use of it is its ``net`` and ``exportable``."""

    exportable = True

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net


def trained_like_net() -> WeakDefectNet:
    """A small weak net with batch-norm statistics that are not the identity (as after training)."""
    torch.manual_seed(0)
    net = WeakDefectNet(lnet_wide=32, lnet_kernel=7)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 1, 96, 80))
    return net.eval()


@pytest.mark.parametrize("backend", ["torchscript", "onnx"])
def test_exported_backends_give_the_torch_outputs(backend: str, tmp_path: Path) -> None:
    net = trained_like_net()
    images = torch.rand(2, 1, 96, 80)
    with torch.no_grad():
        heat_ref, logit_ref = net(images)
        module = with_backend(Holder(net), backend, images[:1], tmp_path)
        assert isinstance(module.net, nn.Module) and module.net is not net
        heat, logit = module.net(images)
        other_size = torch.rand(1, 1, 112, 72)  # dynamic sides: another size from the same file
        assert torch.allclose(module.net(other_size)[1], net(other_size)[1], atol=1e-4)
    assert heat.shape == heat_ref.shape == (2, 1, 12, 10)
    assert torch.allclose(heat, heat_ref, atol=1e-5)
    assert torch.allclose(logit, logit_ref, atol=1e-4)


def test_torch_backend_is_the_module_itself(tmp_path: Path) -> None:
    holder = Holder(trained_like_net())
    assert with_backend(holder, "torch", torch.rand(1, 1, 64, 64), tmp_path) is holder
    with pytest.raises(ValueError, match="backend must be one of"):
        with_backend(holder, "tensorrt", torch.rand(1, 1, 64, 64), tmp_path)


@pytest.mark.skipif(not native_bf16(), reason="bf16 only where the CPU runs it natively")
def test_bf16_backend_stays_within_its_tolerance_of_float32() -> None:
    net = trained_like_net()
    images = torch.rand(2, 1, 96, 80)
    with torch.no_grad():
        heat_ref, logit_ref = net(images)
        heat, logit = Bf16Net(net)(images)
    assert heat.dtype == logit.dtype == torch.float32
    assert (heat - heat_ref).abs().max() <= BF16_HEATMAP_ATOL
    assert (logit - logit_ref).abs().max() <= BF16_LOGIT_ATOL
    assert not torch.equal(heat, heat_ref)  # it did run in bf16


def test_predict_py_gives_the_same_rows_on_every_exact_backend(tmp_path: Path) -> None:
    """predict.py backend=torch|torchscript|onnx on one trained checkpoint: the same probabilities per image."""
    import predict
    from tests.inference_helpers import weak_checkpoint
    from tests.test_predict import predict_cfg, read_csv, write_mixed_images

    ckpt = weak_checkpoint(tmp_path / "run")
    folder = tmp_path / "images"
    folder.mkdir()
    write_mixed_images(folder)
    probabilities = {}
    for backend in ("torch", "torchscript", "onnx"):
        out = tmp_path / backend
        predict.run(predict_cfg(ckpt, folder, out, overlays=False, backend=backend))
        rows = read_csv(out / "predictions.csv")
        probabilities[backend] = {r["name"]: float(r["probability"]) for r in rows}
    assert len(probabilities["torch"]) >= 3
    for backend in ("torchscript", "onnx"):
        assert probabilities[backend].keys() == probabilities["torch"].keys()
        for name, p in probabilities["torch"].items():
            assert abs(probabilities[backend][name] - p) < 1e-5, (backend, name)
