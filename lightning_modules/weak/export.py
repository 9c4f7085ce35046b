"""The weak model as a plain inference module for export (ONNX, TorchScript): image in, heat map and decision out."""

from __future__ import annotations

from torch import nn

from lightning_modules.detection import OUTPUT_NAMES as OUTPUT_NAMES  # re-exported
from lightning_modules.detection import DetectionInference
from lightning_modules.exporters import ExportTarget
from lightning_modules.weak.networks import HalvingPool, MirrorPad, WeakDefectNet

#: the weak model as an export module: image in; heat map, probability and logit out
WeakInference = DetectionInference
#: weight-name prefixes (in :data:`WeakInference`) of the layers int8 quantisation keeps float32, as bf16 autocast
#: does (:func:`lightning_modules.weak.networks.in_float32`): LNet's output convolution and the decision net, whose
#: pooled heat-map statistics decide the image (a small share of the FLOPs)
FLOAT_LAYERS: tuple[str, ...] = ("net.lnet.head.", "net.dnet.")


def min_dynamic_side(net: WeakDefectNet) -> int:
    """The smallest input side from which on the network takes the same operations at every size: every
    mirror padding of LNet mirrors (map side > padding; smaller maps replicate the edge instead) and every
    DNet pooling halves (map side >= 2). A graph traced at a size at least this large (ONNX with dynamic
    axes) is valid for every size at least this large. 64 for the paper's network."""
    stride = 2 ** sum(isinstance(m, nn.MaxPool2d) for m in net.trunk.modules())
    lnet_pad = max((m.pad for m in net.lnet.modules() if isinstance(m, MirrorPad)), default=0)
    dnet_pools = sum(isinstance(m, HalvingPool) for m in net.dnet.modules())
    return stride * max(lnet_pad + 1, 2**dnet_pools)  # the shared layers' paddings (2) hold a fortiori


def weak_export_target(net: WeakDefectNet) -> ExportTarget:
    """:data:`WeakInference` of ``net`` (``image`` in; ``heatmap``, ``probability``, ``logit`` out), valid from
    :func:`min_dynamic_side` on, with :data:`FLOAT_LAYERS` kept float32 by int8."""
    return ExportTarget(WeakInference(net).eval(), OUTPUT_NAMES, min_dynamic_side(net), FLOAT_LAYERS)
