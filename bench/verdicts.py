"""Demo-world verdicts: the numbers behind "sound is suitable, shortcut is not" and the feature-map shift check.

Run: ``.venv/bin/python -m bench.verdicts [--splits test shortcut] [--method gradcam]``

1. Reference bundle of the sound demo model on the "reference" split (the committed demo bundle when present,
   else built here), then ``verify`` of the sound and the shortcut model on the same test split(s): verdict,
   flagged images, per-metric flag rates and accuracy.
2. Early feature maps: a feature reference of the sound model on the "reference" split, then the flag rate on
   the in-distribution test split, on every "shifted_<kind>" split and on "ood".
"""

from __future__ import annotations

import argparse
import time

import torch

from verification.demo import demo_images, demo_model_path, demo_reference_bundle, demo_splits
from verification.errors import VerificationError
from verification.features import build_feature_reference, check_features
from verification.io.images import load_image, to_tensor
from verification.io.models import load_model
from verification.io.records import LoadedImage, LoadedModel
from verification.reference import ReferenceBundle, build_reference, load_bundle, verify


def split_images(split: str) -> tuple[list[LoadedImage], list[str | None]]:
    items = demo_images(split)
    return [load_image(it.path) for it in items], [it.label for it in items]


def reference_bundle(sound: LoadedModel, method: str) -> tuple[ReferenceBundle, str]:
    try:
        path = demo_reference_bundle("sound")
        bundle = load_bundle(path, model=sound, method=method)
        return bundle, f"demo bundle {path.name}"
    except VerificationError:
        images, labels = split_images("reference")
        known = [(im, lab) for im, lab in zip(images, labels) if lab is not None]
        bundle = build_reference(sound, [k[0] for k in known], [k[1] for k in known], method=method)
        return bundle, f"built here from {len(known)} 'reference' images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--splits", nargs="+", default=["test", "shortcut"], help="test splits for the verdicts")
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    sound = load_model(demo_model_path("sound"), name="sound")
    shortcut = load_model(demo_model_path("shortcut"), name="shortcut")
    bundle, origin = reference_bundle(sound, args.method)
    print(
        f"reference: {origin}; method {bundle.method}, layer {bundle.layer}, classes {list(bundle.class_names)}, "
        f"images per class {bundle.counts.tolist()}, band sources {list(bundle.band_source)}"
    )
    print(
        f"verdict rule: an image is flagged when ≥ {bundle.params.min_flags} of {len(bundle.metrics)} metrics "
        f"fall outside the band; a model is unsuitable when > {100 * bundle.params.max_flagged_share:.0f} % "
        "of images are flagged"
    )
    available = set(demo_splits())
    for split in args.splits:
        if split not in available:
            print(f"\n(split '{split}' is not in the demo; skipped)")
            continue
        images, labels = split_images(split)
        print(f"\n== split '{split}': {len(images)} images")
        for model in (sound, shortcut):
            rep = verify(model, bundle, images, labels)
            s = rep.summary()
            rates = ", ".join(f"{m} {100 * v:.0f}%" for m, v in s["metric_flag_rates"].items())
            medians = ", ".join(f"{m} {v:.3f}" for m, v in s["metric_medians"].items())
            acc = "n/a" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f} %"
            print(
                f"  {model.name:9s} {s['verdict'].upper():10s} flagged {s['flagged']}/{s['images']} "
                f"({100 * s['flagged_share']:.1f} %), mean flags/image {s['mean_flags_per_image']:.2f}, "
                f"accuracy {acc}"
            )
            print(f"            per-metric flag rates: {rates}")
            print(f"            metric medians: {medians}")

    ref_images, _ = split_images("reference")
    fref = build_feature_reference(sound, to_tensor(ref_images, sound))
    print(
        f"\nfeature-map check: layers {list(fref.layers)}, shift score band ≤ {fref.score_max:.3f} "
        f"(p{fref.score_percentile:.0f}), structure SSIM band ≥ {fref.ssim_min:.3f} (p{fref.ssim_percentile:.0f}), "
        f"{len(ref_images)} reference images"
    )
    shifted = (
        ["test"]
        + sorted(s for s in available if s.startswith("shifted_"))
        + (["ood"] if "ood" in available else [])
    )
    for split in shifted:
        images, _ = split_images(split)
        rep = check_features(sound, fref, to_tensor(images, sound))
        print(
            f"  {split:18s} flagged {int(rep.flagged.sum()):3d}/{len(images):3d} = {100 * rep.flag_rate:5.1f} %   "
            f"(score flag {100 * rep.score_flag.mean():5.1f} %, SSIM flag {100 * rep.ssim_flag.mean():5.1f} %, "
            f"median score {float(torch.tensor(rep.score).median()):.2f})"
        )
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
