"""Loading a torch.export program against loading the same weights eagerly, with the first Grad-CAM.

Run: ``.venv/bin/python bench/load.py [--repeats 3] [--size 224]`` (or ``python -m bench.load``).

The model is the torchxrayvision chest X-ray DenseNet-121 (``DenseNet(weights=None)``: random weights, 1
channel, 18 outputs; nothing downloaded), written twice: a ``.pt2`` exported the default way
(``torch.export.export(model, (x,))``, batch fixed at 1) and its state dict (``torch.save``) with a sidecar
naming ``densenet121`` (torchvision's architecture, the same keys). Each measurement runs in a fresh Python
process (``import torch`` done before the clock starts, everything else counted: the loader's imports, the
archive inspection, torch.export.load + unflatten or the architecture build + load_state_dict, the dry run),
eager and .pt2 alternating, ``--repeats`` times each; the table gives the medians, the second load of the same
file in the same process (the content cache) and the split of one .pt2 load. Target: .pt2 load + first
Grad-CAM within 2× of the eager one. The load average is printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
path, size = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
from verification.io.models import load_model
from verification.cam import compute_cams
model = load_model(path)
t1 = time.perf_counter()
x = torch.randn(1, model.in_channels, size, size, generator=torch.Generator().manual_seed(0))
(res,) = compute_cams(model, x, methods=("gradcam",))
t2 = time.perf_counter()
again = load_model(path)
t3 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "gradcam": t2 - t1, "total": t2 - t0, "reload": t3 - t2,
                  "layer": res.layer, "fixed_batch": model.fixed_batch}))
"""

_SPLIT = r"""
import io, json, sys, time
import torch
torch.set_num_threads(1)
path = sys.argv[1]
data = open(path, "rb").read()
T = time.perf_counter
out = {}
t = T(); import verification.io.models as M; out["import loader"] = T() - t
t = T(); import torch._export.serde.serialize, torch.export; out["import torch.export's deserializer"] = T() - t
t = T(); M.untrusted_pt2_problems(data, "m.pt2", max_bytes=1 << 31, trust=False)
out["inspect the archive (verification.io.pt2)"] = T() - t
t = T(); program = torch.export.load(io.BytesIO(data)); out["torch.export.load, stock"] = T() - t
M._cache_schema_type_hints()
t = T(); program = torch.export.load(io.BytesIO(data)); out["torch.export.load, type hints memoised"] = T() - t
t = T(); module = torch.export.unflatten(program); out["torch.export.unflatten"] = T() - t
M.clear_export_cache()
t = T(); M.load_model(path); out["load_model (warm process, no cache)"] = T() - t
t = T(); M.load_model(path); out["load_model again (content cache)"] = T() - t
print(json.dumps(out))
"""


def _run(code: str, *args: str) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"child failed:\n{res.stderr[-3000:]}")
    doc: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)

    import torch
    import torchxrayvision as xrv

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        net = xrv.models.DenseNet(weights=None).eval()
        names = [f"p{i}" for i in range(18)]
        pt2 = root / "xrv_densenet121.pt2"
        torch.export.save(torch.export.export(net, (torch.randn(1, 1, args.size, args.size),)), pt2)
        pt2.with_suffix(".json").write_text(json.dumps({"class_names": names}))
        eager = root / "xrv_densenet121_sd.pt"
        torch.save(net.state_dict(), eager)
        eager.with_suffix(".json").write_text(
            json.dumps({"architecture": "densenet121", "in_channels": 1, "class_names": names})
        )
        runs: dict[str, list[dict[str, object]]] = {"eager": [], "pt2": []}
        for _ in range(args.repeats):
            runs["eager"].append(_run(_CHILD, str(eager), str(args.size)))
            runs["pt2"].append(_run(_CHILD, str(pt2), str(args.size)))
        split = _run(_SPLIT, str(pt2))
        sizes = {"eager": eager.stat().st_size, "pt2": pt2.stat().st_size}
    load_after = os.getloadavg()

    def med(kind: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[kind])  # type: ignore[arg-type]

    lines = [
        "# Load time: torch.export (.pt2) vs eager (state dict into the architecture)",
        "",
        f"torchxrayvision DenseNet-121, random weights, 1×{args.size}×{args.size}, 18 outputs; 1 thread; "
        f"medians of {args.repeats} fresh processes each (alternating); load average {load_before[0]:.1f} "
        f"before, {load_after[0]:.1f} after (2 shared cores: absolute seconds are upper bounds).",
        "",
        "| path | file MB | load s | first Grad-CAM s | load + Grad-CAM s | reload (same process) s |",
        "|---|---|---|---|---|---|",
    ]
    for kind, label in (("eager", "eager: state dict + densenet121"), ("pt2", ".pt2, batch fixed at 1")):
        lines.append(
            f"| {label} | {sizes[kind] / 1e6:.1f} | {med(kind, 'load'):.2f} | {med(kind, 'gradcam'):.2f} | "
            f"{med(kind, 'total'):.2f} | {med(kind, 'reload'):.2f} |"
        )
    ratio = med("pt2", "total") / med("eager", "total")
    lines += [
        "",
        f"Ratio (.pt2 / eager, load + first Grad-CAM): **{ratio:.2f}×** (target ≤ 2×). "
        f"fixed_batch of the .pt2: {runs['pt2'][0]['fixed_batch']}; Grad-CAM layer: {runs['pt2'][0]['layer']}.",
        "",
        "One .pt2 load, split (one warm process):",
        "",
        "| step | s |",
        "|---|---|",
    ]
    lines += [f"| {k} | {float(v):.2f} |" for k, v in split.items()]  # type: ignore[arg-type]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "test-artifacts" / "load.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"saved {out}")
    return 0 if ratio <= 2.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
