"""Where the CPU time goes: FLOPs, achieved GFLOP/s against a matmul peak, inference per backend, training steps.

    nice -n 5 python benchmarks/cpu_speed.py

On the machine at hand (threads = cores, PyTorch's default), random weights and pixels (timing needs no data):

- ``peak_gflops``: a 4096^3 float32 matmul (best of 3); ``peak_gflops_bf16`` the same in bf16 (native bf16 only);
- inference of the paper-size weak net (1408x512, eval mode): FLOPs with direct convolutions
  (``torch.utils.flop_counter``), seconds per image at batch 1 and 2 for eager float32 with direct convolutions
  (``eager``, the network before LNet's Fourier path), eager with LNet's 15x15 convolution in the Fourier domain
  along the rows (``fourier_rows``, the default since; :mod:`lightning_modules.weak.fourier_conv`), channels-last
  float32, bf16 autocast channels-last (``torch_bf16``, CPUs with native bf16 only), TorchScript, ONNX Runtime
  (graph optimisation ``all``/``basic``, intra-op threads = cores and 1), ONNX Runtime on the direct network's file
  (``onnx_all_direct``), ONNX Runtime int8 (``onnx_int8``, batch 1, threads = cores; calibrated on random pixels,
  which set its ranges but not its speed); bf16's and the Fourier path's largest differences from float32. The
  exported files are the default network's: LNet's Fourier path is ``MatMul`` in ONNX, left float32 by int8;
- the weak CPU preset's training step (``experiment=weak_kolektor_cpu``: a pair at ``data.image_size``, every part
  trained, as stage 3) in float32, from the same weights, timed interleaved (``--train-rounds`` rounds, each variant
  once per round; the median): ``eager`` (direct convolutions), ``channels_last``, ``fourier_rows`` (LNet's Fourier
  path), ``one_thread`` (eager); ``--compile`` adds ``torch.compile`` of ``fourier_rows``;
- the clustering CPU preset's training step (eager float32), from ``benchmarks/cpu_precision.py``'s workload;
- where ``--archive`` (KolektorSDD.zip) is there: the preset's own Lightning loop on real data, stage 1's first
  ``--loop-steps`` steps with 0, 1 and 2 loader workers (``metrics.loop``, :mod:`benchmarks.loop_share`): the data
  loader's share of a step and what Lightning's loop adds to the step's computation.

``metrics.train_speedup_vs_eager`` is eager's step time over the fastest variant's at threads = cores.
The headline inference figures come from paired rounds (``--paired-rounds``): for the fastest float32 backend and
each reduced-precision one, each round times one 4096^3 matmul and then one image, so that the peak and the image
see the same machine (on a shared virtual machine the matmul peak moved by a third between runs minutes apart:
``benchmarks/notes/cpu_speed.md``). ``metrics.peak_gflops`` is the best of every probe of the run,
``metrics.inference_s_1408x512`` the median of the paired images (so their product is conservative), and
``metrics.inference_ratio_paired_median`` the median of the rounds' own ratios.
``metrics.inference_s_1408x512`` is the fastest backend at batch 1 whose outputs are tested against the direct
float32 network (``tests/test_inference_backends.py``), int8 among them only where ``int8_allowed``: today's int8
graph had its test-fold AP within 0.005 of float32's in every ``benchmarks/results/int8_accuracy*.json``
(``benchmarks/int8_accuracy.py``);
``inference_s_1408x512_float32`` the fastest float32 one, ``inference_s_1408x512_int8`` int8's own.
Writes ``benchmarks/results/cpu_speed.json`` (``--name``); the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.int8_accuracy import int8_allowed  # noqa: E402
from benchmarks.loop_share import DEFAULT_ARCHIVE, loop_shares  # noqa: E402
from lightning_modules.weak.export import FLOAT_LAYERS  # noqa: E402
from lightning_modules.weak.losses import weak_loss  # noqa: E402
from lightning_modules.weak.networks import WeakDefectNet  # noqa: E402
from workflow.inference_backends import Bf16Net, export_net, onnx_session_runner  # noqa: E402
from workflow.precision import native_bf16  # noqa: E402
from workflow.quantization import quantize_int8  # noqa: E402
from workflow.run_info import require_clean_tree, write_result  # noqa: E402
from workflow.timing import timed  # noqa: E402

PAPER_SIZE = (1408, 512)
#: backends whose outputs only approximate float32's
REDUCED_PRECISION = ("torch_bf16", "onnx_int8")


def matmul_probe(dtype: torch.dtype = torch.float32, n: int = 4096) -> Callable[[], float]:
    """One ``n^3`` matmul in ``dtype`` per call (after one warm-up call); returns its GFLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)

    def probe() -> float:
        start = time.perf_counter()
        a @ b
        return 2 * n**3 / (time.perf_counter() - start) / 1e9

    probe()
    return probe


def peak_gflops(dtype: torch.dtype, n: int = 4096) -> float:
    """The best of 3 :func:`matmul_probe` calls."""
    probe = matmul_probe(dtype, n)
    return max(probe() for _ in range(3))


def gflop(step: Callable[[], object]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops() / 1e9


def cpu_flags() -> list[str]:
    """The CPU's vector-instruction flags (Linux ``/proc/cpuinfo``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))


def inference_runners(net: WeakDefectNet, example: torch.Tensor, work: Path) -> dict[str, Callable]:
    """Per backend: ``images -> outputs`` (all from the same weights)."""
    runners: dict[str, Callable] = {"eager": net}
    fourier_rows = WeakDefectNet(lnet_fourier=True).eval()
    fourier_rows.load_state_dict(net.state_dict())
    runners["fourier_rows"] = fourier_rows
    channels_last = WeakDefectNet(lnet_fourier=False).eval()
    channels_last.load_state_dict(net.state_dict())
    channels_last = channels_last.to(memory_format=torch.channels_last)
    runners["channels_last"] = lambda x: channels_last(x.contiguous(memory_format=torch.channels_last))
    if native_bf16():
        bf16 = WeakDefectNet(lnet_fourier=False).eval()
        bf16.load_state_dict(net.state_dict())
        runners["torch_bf16"] = Bf16Net(bf16)
    # the exported files are the default network's: LNet's Fourier path as matrix products
    script = torch.jit.load(str(export_net(fourier_rows, "torchscript", example, work / "model.pt")))
    runners["torchscript"] = script
    onnx_path = export_net(fourier_rows, "onnx", example, work / "model.onnx")
    for level in ("all", "basic"):
        runners[f"onnx_{level}"] = onnx_session_runner(onnx_path, level=level)
    runners["onnx_all_1thread"] = onnx_session_runner(onnx_path, threads=1)
    runners["onnx_all_direct"] = onnx_session_runner(export_net(net, "onnx", example, work / "direct.onnx"))
    calibration = torch.rand(2, *example.shape[1:])  # ranges only: the speed does not depend on them
    int8_path = quantize_int8(onnx_path, work / "model_int8.onnx", calibration, keep_float=FLOAT_LAYERS)
    runners["onnx_int8"] = onnx_session_runner(int8_path)
    return runners


def paired_rounds(run: Callable, image: torch.Tensor, probe: Callable[[], float], rounds: int) -> dict[str, list]:
    """``rounds`` times: the matmul probe's GFLOP/s, then one image's seconds (after one warm-up image)."""
    run(image)
    peaks, seconds = [], []
    for _ in range(rounds):
        peaks.append(probe())
        start = time.perf_counter()
        run(image)
        seconds.append(time.perf_counter() - start)
    return {"peak_gflops": peaks, "seconds": seconds}


def inference(repeats: int, paired: int = 9) -> dict:
    torch.manual_seed(0)
    net = WeakDefectNet(lnet_fourier=False).eval()
    images = {b: torch.rand(b, 1, *PAPER_SIZE) for b in (1, 2)}
    result: dict = {"gflop_per_image_direct": gflop(lambda: net(images[1]))}
    with torch.no_grad(), tempfile.TemporaryDirectory() as work:
        runners = inference_runners(net, images[1], Path(work))
        per_image: dict[str, dict[str, float]] = {}
        for name, run in runners.items():
            batches = (1, 2) if name in ("eager", "fourier_rows", "torch_bf16", "onnx_all") else (1,)
            per_image[name] = {f"batch{b}": timed(lambda: run(images[b]), repeats) / b for b in batches}  # noqa: B023
            print(f"inference {name}: {per_image[name]}", flush=True)
        exact = {k: v["batch1"] for k, v in per_image.items() if k not in REDUCED_PRECISION}
        paired_backends = [min(exact, key=exact.get), *(k for k in REDUCED_PRECISION if k in runners)]
        probe = matmul_probe()
        result["paired"] = {name: paired_rounds(runners[name], images[1], probe, paired) for name in paired_backends}
        print(f"paired rounds: {result['paired']}", flush=True)
        ref = net(images[1])
        result["fourier_rows_max_abs_diff"] = {name: float((a - b).abs().max()) for name, a, b in zip(
            ("heatmap", "logit"), ref, runners["fourier_rows"](images[1]), strict=True)}
        if "torch_bf16" in runners:
            low = runners["torch_bf16"](images[1])
            result["bf16_max_abs_diff"] = {"heatmap": float((ref[0] - low[0]).abs().max()),
                                           "logit": float((ref[1] - low[1]).abs().max())}
    result["seconds_per_image"] = per_image
    return result


def weak_train_step(net: WeakDefectNet, pair: torch.Tensor) -> Callable[[], float]:
    """One step as stage 3: weak loss + BCE, every part trained, SGD (the presets' optimizer kind)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    labels = torch.tensor([1.0, 0.0])

    def step() -> float:
        heatmap, logits = net(pair)
        loss = weak_loss(heatmap, labels, 8.0) + F.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def training(repeats: int, compile_too: bool) -> dict:
    """The weak CPU preset's float32 step per variant, from the same initial weights, timed interleaved (each
    variant once per round, so that a change in the machine's load hits all of them); its first loss per variant."""
    from benchmarks.cpu_precision import preset

    cfg = preset("weak_kolektor_cpu")
    kernel = int(cfg.model.net.lnet_kernel)
    torch.manual_seed(0)
    initial = WeakDefectNet(lnet_kernel=kernel).state_dict()
    pair = torch.rand(2, 1, *cfg.data.image_size)
    last = pair.contiguous(memory_format=torch.channels_last)
    # name: (LNet's Fourier path, wrap, input, threads; 0 = the default)
    variants: dict[str, tuple[bool, Callable[[WeakDefectNet], Callable], torch.Tensor, int]] = {
        "eager": (False, lambda n: n, pair, 0),
        "channels_last": (False, lambda n: n.to(memory_format=torch.channels_last), last, 0),
        "fourier_rows": (True, lambda n: n, pair, 0),
        "one_thread": (False, lambda n: n, pair, 1),
    }
    if compile_too:
        variants["fourier_rows_compile"] = (True, torch.compile, pair, 0)
    threads = torch.get_num_threads()
    result: dict = {"image_size": list(cfg.data.image_size), "seconds": {}, "first_loss": {}, "first_step_s": {}}
    steps: dict[str, Callable[[], float]] = {}
    for name, (fourier, wrap, x, n_threads) in variants.items():
        torch.set_num_threads(n_threads or threads)
        net = WeakDefectNet(lnet_kernel=kernel, lnet_fourier=fourier)
        net.load_state_dict(initial)
        steps[name] = weak_train_step(wrap(net), x)
        start = time.perf_counter()
        result["first_loss"][name] = float(steps[name]())  # for compile: includes the compilation
        result["first_step_s"][name] = time.perf_counter() - start
    rounds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            torch.set_num_threads(variants[name][3] or threads)
            start = time.perf_counter()
            step()
            rounds[name].append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    result["seconds"] = {name: statistics.median(times) for name, times in rounds.items()}
    result["seconds_all"] = rounds
    print(f"train: {result['seconds']}", flush=True)
    result["gflop_per_step"] = gflop(weak_train_step(WeakDefectNet(lnet_kernel=kernel, lnet_fourier=False), pair))
    return result


def cluster_training(repeats: int) -> dict:
    from benchmarks.cpu_precision import cluster_workloads

    torch.manual_seed(0)
    step = cluster_workloads("32-true")["cluster_train_step"]
    return {"gflop_per_step": gflop(step), "seconds_eager": timed(step, repeats)}


def summary(peak: float, infer: dict, train: dict, cluster: dict, allow_int8: bool = False) -> dict:
    """The headline figures and the bars' ratios; int8 is a candidate for the fastest backend only with
    ``allow_int8`` (its test-fold AP checked, :func:`benchmarks.int8_accuracy.int8_allowed`)."""
    per_image = {k: v["batch1"] for k, v in infer["seconds_per_image"].items()}
    paired = infer.get("paired", {})
    # with paired rounds, the headline comes from them only (their medians, against the best probe of the run): an
    # unpaired median, taken minutes apart from any probe, is no longer a candidate
    headline = {k: statistics.median(v["seconds"]) for k, v in paired.items()} if paired else per_image
    peak = max([peak, *(g for v in paired.values() for g in v["peak_gflops"])])
    exact = {k: v for k, v in headline.items() if k not in REDUCED_PRECISION}
    best_exact = min(exact, key=exact.get)
    candidates = {k: v for k, v in headline.items() if k != "onnx_int8" or allow_int8}
    best = min(candidates, key=candidates.get)
    direct = infer["gflop_per_image_direct"]
    rounds = paired.get(best, {"peak_gflops": [], "seconds": []})
    own_ratios = [s * g / direct for s, g in zip(rounds["seconds"], rounds["peak_gflops"], strict=True)]
    eager_step = train["seconds"]["eager"]
    # variants at threads = cores: fewer threads only wins where other jobs oversubscribe the cores (recorded apart)
    same_threads = {k: v for k, v in train["seconds"].items() if k != "one_thread"}
    fastest_step = min(same_threads, key=same_threads.get)
    return {
        "peak_gflops": peak,
        "inference_s_1408x512": headline[best], "inference_backend": best,
        "inference_s_1408x512_float32": exact[best_exact], "inference_backend_float32": best_exact,
        "inference_s_1408x512_int8": headline.get("onnx_int8"), "int8_allowed": allow_int8,
        "inference_ratio_to_direct_at_peak": headline[best] * peak / direct,
        "inference_ratio_paired_median": statistics.median(own_ratios) if own_ratios else None,
        "inference_ratio_to_direct_at_peak_float32": exact[best_exact] * peak / direct,
        "achieved_gflops": {k: direct / v for k, v in per_image.items()},
        "train_step_s_eager": eager_step, "train_fastest_variant": fastest_step,
        "train_speedup_vs_eager": eager_step / train["seconds"][fastest_step],
        "train_one_thread_vs_eager": eager_step / train["seconds"]["one_thread"],
        "train_achieved_gflops_eager": train["gflop_per_step"] / eager_step,
        "cluster_train_achieved_gflops_eager": cluster["gflop_per_step"] / cluster["seconds_eager"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2, help="inference repeats per backend")
    parser.add_argument("--paired-rounds", type=int, default=9,
                        help="rounds of (matmul probe, one image) for the headline inference backends")
    parser.add_argument("--train-rounds", type=int, default=7, help="interleaved rounds of the training variants")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) on the step")
    parser.add_argument("--name", default="cpu_speed")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="KolektorSDD.zip for the loop shares")
    parser.add_argument("--loop-steps", type=int, default=30, help="training steps per data-loader setting")
    parser.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    args = parser.parse_args()
    commit = require_clean_tree("benchmarks/cpu_speed.py", args.allow_dirty, ROOT)
    start, load_before = time.perf_counter(), os.getloadavg()
    peak = peak_gflops(torch.float32)
    # emulated bf16 (no AVX512-BF16/AMX) takes many minutes for one 4096^3 product and says nothing useful
    metrics: dict = {"peak_gflops_start": peak,
                     "peak_gflops_bf16": peak_gflops(torch.bfloat16) if native_bf16() else None,
                     "threads": torch.get_num_threads(), "native_bf16": native_bf16(), "cpu_flags": cpu_flags()}
    infer = inference(args.repeats, args.paired_rounds)
    train, cluster = training(args.train_rounds, args.compile), cluster_training(1)
    metrics.update(gflop_per_image_direct=infer["gflop_per_image_direct"])
    metrics.update(summary(peak, infer, train, cluster, int8_allowed()))
    metrics.update(inference=infer, weak_train=train, cluster_train=cluster)
    if args.archive.is_file():  # the preset's own loop on real data: data loader and Lightning's shares
        metrics["loop"] = loop_shares(args.archive, args.loop_steps)
    else:
        metrics["not_measured"] = [f"data loader and Lightning loop shares: no {args.archive}"]
    metrics.update(load_average_before=list(load_before), load_average_after=list(os.getloadavg()))
    device_flags = ", ".join(f for f in metrics["cpu_flags"] if f.startswith(("avx512f", "avx512_bf16", "amx")))
    write_result(ROOT / "benchmarks" / "results", args.name, "python benchmarks/cpu_speed.py " + " ".join(
        sys.argv[1:]), commit, time.perf_counter() - start, metrics, selection="fixed", method="weak",
        vector_instructions=device_flags or "avx2 or less")
    print({k: v for k, v in metrics.items() if not isinstance(v, dict | list)})


if __name__ == "__main__":
    main()
