"""Gradient-CAM benchmark: six maps from one pass against the floor and the peers, on CPU.

ResNet-50 (seeded random weights; no downloads), 224×224, batch 1 and batch 8, target layer ``layer4``,
target = each sample's predicted class logit. For each batch size, median wall time over repeats (after
warm-ups) of:

- forward: the model's own forward (``torch.no_grad``);
- floor: forward with autograd plus ``torch.autograd.grad`` of the target w.r.t. the ``layer4`` activation
  only — the least any gradient CAM can do (the backward stops at the target layer);
- forward+backward: the same forward plus a full ``loss.backward()`` to every parameter (what the peers run);
- ours: ``compute_cams`` with gradcam, gradcampp, xgradcam, hirescam, layercam, eigencam from one pass,
  as a ratio to the floor (target ≤ 1.2×);
- pytorch-grad-cam 1.5.x: GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM one after
  another (each its own forward and backward), and torchcam 0.5 GradCAM alone; our speedup over each.

Then, if ``bench/cam_scorecam.py`` (Score-CAM benchmark) exists, its ``run()`` lines.

    .venv/bin/python bench/cam.py                           # everything (Score-CAM at full K = 2048)
    .venv/bin/python bench/cam.py --scorecam-channels-limit 128   # quick Score-CAM part
    .venv/bin/python bench/cam.py --no-scorecam --threads 2

The machine's load average is printed at the start and the end: timings on a shared machine are only
comparable within one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verification.cam import compute_cams  # noqa: E402

SIX = ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "eigencam"]


def _interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int, warmups: int
) -> dict[str, float]:
    """Median seconds per variant; the variants take turns within each round, so a change of load on the
    shared machine hits all of them alike rather than whichever happened to run then."""
    for _ in range(warmups):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _input(batch: int) -> torch.Tensor:
    from skimage import data

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255.0
    img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (img - mean) / std
    torch.manual_seed(batch)
    return (x + 0.1 * torch.randn(batch, 3, 224, 224)).contiguous()  # distinct samples


def bench_batch(model: torch.nn.Module, batch: int, repeats: int, warmups: int) -> list[str]:
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
    from torchcam.methods import GradCAM as TorchcamGradCAM

    x = _input(batch)
    layer = model.layer4

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def floor() -> None:
        acts: list[torch.Tensor] = []
        h = layer.register_forward_hook(lambda m, a, o: acts.append(o))
        try:
            out = model(x)
        finally:
            h.remove()
        y = out.gather(1, out.detach().argmax(1, keepdim=True)).sum()
        torch.autograd.grad(y, acts[0])

    def full_backward() -> None:
        out = model(x)
        out.gather(1, out.detach().argmax(1, keepdim=True)).sum().backward()
        model.zero_grad(set_to_none=True)

    def ours() -> None:
        compute_cams(model, x, methods=SIX, layers=["layer4"])

    def gradcam_lib_six() -> None:
        for cls in (GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM):
            with cls(model=model, target_layers=[layer]) as cam:
                cam(input_tensor=x, targets=None)
        model.zero_grad(set_to_none=True)

    def torchcam_gradcam() -> None:
        extractor = TorchcamGradCAM(model, "layer4")
        try:
            out = model(x)
            extractor(out.argmax(1).tolist(), out)
        finally:
            extractor.remove_hooks()
        model.zero_grad(set_to_none=True)

    t = _interleaved_medians(
        {
            "forward": forward,
            "floor": floor,
            "fwd+bwd": full_backward,
            "ours": ours,
            "gradcam_lib": gradcam_lib_six,
            "torchcam": torchcam_gradcam,
        },
        repeats,
        warmups,
    )
    ms = {k: 1000 * v for k, v in t.items()}
    return [
        f"batch {batch}: forward {ms['forward']:.0f} ms | floor (fwd + grad to layer4) {ms['floor']:.0f} ms | "
        f"fwd + full backward {ms['fwd+bwd']:.0f} ms",
        f"batch {batch}: ours, six maps from one pass {ms['ours']:.0f} ms = {t['ours'] / t['floor']:.2f}× floor "
        f"(target ≤ 1.2×)",
        f"batch {batch}: pytorch-grad-cam six one after another {ms['gradcam_lib']:.0f} ms "
        f"= {t['gradcam_lib'] / t['fwd+bwd']:.1f}× fwd+bwd -> ours {t['gradcam_lib'] / t['ours']:.1f}× faster",
        f"batch {batch}: torchcam Grad-CAM alone {ms['torchcam']:.0f} ms -> ours (six) take "
        f"{t['ours'] / t['torchcam']:.2f}× its time for one (speedup per map {6 * t['torchcam'] / t['ours']:.1f}×)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-scorecam", action="store_true")
    parser.add_argument("--scorecam-channels-limit", type=int, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    print(
        f"ResNet-50 224×224 CPU, torch {torch.__version__}, {args.threads} threads, "
        f"median of {args.repeats} after {args.warmups} warm-ups; load average at start {os.getloadavg()}"
    )
    for batch in args.batches:
        for line in bench_batch(
            model, batch, args.repeats if batch == 1 else max(3, args.repeats // 2), args.warmups
        ):
            print(line, flush=True)
    print(f"load average at end of the gradient part {os.getloadavg()}")
    score = ROOT / "bench" / "cam_scorecam.py"
    if score.is_file() and not args.no_scorecam:
        spec = importlib.util.spec_from_file_location("bench_cam_scorecam", score)
        assert spec is not None
        assert spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for line in mod.run(channels_limit=args.scorecam_channels_limit, threads=args.threads):
            print(line, flush=True)
        print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
