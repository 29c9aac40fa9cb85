"""The command line: ``python -m verification <command>``, a thin layer over the backend's public API.

Exit codes (scripts can rely on them):

* ``0`` — success; for ``verify``, the verdict is SUITABLE.
* ``1`` — the run failed (a file that cannot be read, a model that does not load, a bad bundle, ...): one
  clear line on stderr, no traceback unless ``--debug``.
* ``2`` — bad usage (unknown option, missing argument, invalid value), reported by argparse.
* ``3`` — ``verify`` completed and the verdict is UNSUITABLE (a decisive evidence line failed).
* ``4`` — ``verify`` completed and the verdict is CANNOT VERIFY (what is missing is printed and in the JSON).
* ``130`` — interrupted (Ctrl-C / SIGTERM); nothing partial is left behind.

Unreadable images do not stop ``cam`` or ``verify``: each becomes an error row (in the manifest / the table)
and is left out of the verdict; ``--strict`` turns the first one into a failure (exit 1) instead.

Outputs are written atomically: a single file goes to a hidden temporary name in the target folder and is
renamed into place when complete; a multi-file output (``cam --out DIR``, a bundle folder) is built in a
hidden staging folder beside the target, its ``manifest.json`` written last, and the folder renamed into
place. On any failure the temporary files are removed, so an output that exists is complete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from verification.errors import VerificationError

log = logging.getLogger("verification.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNSUITABLE = 3
EXIT_CANNOT_VERIFY = 4
EXIT_INTERRUPTED = 130
VERDICT_EXIT = {"suitable": EXIT_OK, "unsuitable": EXIT_UNSUITABLE, "cannot_verify": EXIT_CANNOT_VERIFY}


class CliError(VerificationError):
    """A failure reported as one line (exit 1): an output in the way, a bad image under --strict, ..."""


# --------------------------------------------------------------------------------------------------- outputs


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; renamed onto ``target`` on success, deleted on failure."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the output gets the usual mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: str | Path, text: str) -> Path:
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it replaces ``target``, on failure it goes.

    ``target`` may be absent or an empty folder; anything else needs ``force`` (then it is replaced whole).
    """
    target = Path(target)
    if target.exists() and not force and not (target.is_dir() and not any(target.iterdir())):
        raise CliError(
            f"{target} already exists and is not an empty folder; choose another path or add --force"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(target: Path, *, force: bool) -> None:
    """Refuse (CliError) an output folder that exists with content unless ``force``."""
    if target.exists() and not force and not (target.is_dir() and not any(target.iterdir())):
        raise CliError(
            f"{target} already exists and is not an empty folder; choose another path or add --force"
        )


def _swap_in(staging: Path, target: Path) -> None:
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists() and not target.is_symlink():
        os.replace(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    old.rmdir()
    os.replace(target, old)
    os.replace(staging, target)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, default=_json_default, allow_nan=True) + "\n"


# ------------------------------------------------------------------------------------------------- arguments


def _int_at_least(minimum: int, bound: str) -> Callable[[str], int]:
    """An argparse type: a whole number ≥ ``minimum`` (``bound`` words the limit in the message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "at least 1")
_non_negative_int = _int_at_least(0, "0 or more")


def _methods(text: str) -> tuple[str, ...]:
    from verification.cam import list_methods

    known = list_methods()
    names = tuple(m.strip().lower().replace("-", "_") for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in known]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or repr(text)}; choose from {', '.join(known)}"
        )
    return names


def _method(text: str) -> str:
    names = _methods(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"give one method, got {len(names)}")
    return names[0]


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output and diagnostics")
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or summary lines on stderr"
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log what is being done (stderr)")
    group.add_argument("--debug", action="store_true", help="show the full traceback when something fails")


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="model file: .safetensors / .pt / .pth state dict (+ sidecar JSON), .pt2"
    )
    group = parser.add_argument_group("model loading")
    group.add_argument("--sidecar", help="JSON sidecar describing the model (default: <stem>.json beside it)")
    group.add_argument("--architecture", help="architecture name for a state dict without a sidecar")
    group.add_argument(
        "--trust",
        action="store_true",
        help="allow loading a pickled model; this runs code from the file, so only for files you trust",
    )


def _batch_args(parser: argparse.ArgumentParser, *, engines: bool = True) -> None:
    group = parser.add_argument_group("batching")
    group.add_argument("--batch-size", type=_positive_int, default=16, help="images per forward pass (16)")
    group.add_argument(
        "--workers", type=_non_negative_int, default=0,
        help="image-decoding worker processes (local engine) or model replicas (ray engine); default 0",
    )  # fmt: skip
    group.add_argument("--strict", action="store_true", help="fail (exit 1) on the first unreadable image")
    if engines:
        group.add_argument("--engine", choices=("local", "ray"), default="local", help="where to run (local)")
        group.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
        group.add_argument(
            "--ray-cpus", type=_positive_int, default=2, help="CPUs of a locally started Ray instance (2)"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m verification",
        description="Verify medical-imaging CNNs through their attention maps.",
        epilog="Exit codes: 0 ok / verify: SUITABLE, 1 failure, 2 bad usage, 3 verify: UNSUITABLE, "
        "4 verify: CANNOT VERIFY, 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("layers", help="list a model's layers and the default CAM target layer")
    _model_args(p)
    p.add_argument("--all", action="store_true", help="also list layers without a spatial (N,C,H,W) output")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)
    p.set_defaults(handler=cmd_layers)

    p = sub.add_parser(
        "methods", help="list the map methods (CAMs and pixel attributions) that --methods accepts"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)
    p.set_defaults(handler=cmd_methods)

    p = sub.add_parser(
        "cam",
        help="attention maps for images: PNG overlays and .npz per image",
        description="Compute attention maps for image files and folders (searched recursively). Writes, per "
        "image, <name>.npz (maps, raw maps, logits, probabilities) and <name>.<method>.png overlays, then "
        "manifest.json last.",
    )
    _model_args(p)
    p.add_argument(
        "inputs",
        nargs="+",
        help="image files and/or folders, or DICOMweb studies/series: "
        "dicomweb+http://host:port/dicom-web/studies/<uid>[/series/<uid>] (credentials from "
        "VERIFICATION_DICOMWEB_USER/_PASSWORD or _TOKEN)",
    )
    p.add_argument("-o", "--out", required=True, help="output folder (absent or empty, or use --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument(
        "--methods",
        type=_methods,
        default=("gradcam",),
        help="comma-separated map methods (default gradcam): any registered one, CAMs or pixel attributions "
        "('methods' lists them)",
    )
    p.add_argument(
        "--layer", action="append", help="target layer (dotted name; repeat for several; default: auto)"
    )
    p.add_argument("--target", help="class index or name to explain (default: the predicted class)")
    p.add_argument("--no-overlays", action="store_true", help="write only the .npz files")
    p.add_argument(
        "--pacs-store",
        action="store_true",
        help="also store each heatmap back into its PACS study (inputs from dicomweb+ addresses): a "
        "Secondary Capture overlay in a new series, all validated before one STOW-RS request per study",
    )
    p.add_argument(
        "--pacs-verdict",
        metavar="VERIFY_JSON",
        help="with --pacs-store: record the verdict of this 'verify --json' result in the stored objects",
    )
    _batch_args(p)
    _common(p)
    p.set_defaults(handler=cmd_cam)

    p = sub.add_parser(
        "reference", help="reference bundles (per-class reference maps with calibration bands)"
    )
    ref_sub = p.add_subparsers(dest="reference_command", required=True, metavar="ACTION")
    p = ref_sub.add_parser(
        "build",
        help="build a reference bundle from a labelled folder of trusted images",
        description="Per class, the mean CAM over the correctly classified images of a labelled reference "
        "set (class subfolders, or a CSV of path,label), the reference images (small thumbnails, for the "
        "input gate) and the verdict's calibration: thresholds from healthy variation (--healthy models; "
        "with none, a bootstrap over this model's images), checked for power against the "
        "cascading-randomised model and --bad models. Writes <stem>.npz and <stem>.json (the manifest, "
        "written last).",
    )
    _model_args(p)
    p.add_argument("data", help="labelled images: a folder of class subfolders, or a CSV file of path,label")
    p.add_argument("-o", "--out", required=True, help="bundle path (<stem>, <stem>.npz or <stem>.json)")
    p.add_argument("--method", type=_method, default="gradcam", help="CAM method of the references (gradcam)")
    p.add_argument("--layer", help="target layer (default: the model's default target layer)")
    p.add_argument(
        "--all-images", action="store_true", help="use misclassified images too (default: correct ones only)"
    )
    p.add_argument(
        "--grid",
        type=_grid,
        help="comparison grid of the references and metrics: 'native' (the model's input size), N or HxW "
        "(default: native with --annotations, else 64x64)",
    )
    cal = p.add_argument_group("verdict calibration")
    cal.add_argument(
        "--healthy",
        action="append",
        default=[],
        metavar="MODEL",
        help="another healthy model of the same task (repeat); the spread of healthy models "
        "sets the thresholds (default: a bootstrap over the trusted model's images)",
    )
    cal.add_argument(
        "--bad",
        action="append",
        default=[],
        metavar="MODEL",
        help="a known-bad model (e.g. a shortcut model; repeat) for the power check",
    )
    cal.add_argument("--annotations", help="folder of finding masks <image stem>_lesion.png (E2, E4)")
    cal.add_argument(
        "--anatomy", help="folder of anatomy masks <image stem>_lung.png (E3; default: automatic)"
    )
    cal.add_argument(
        "--faithfulness",
        action="store_true",
        help="also calibrate E6 (deletion/insertion; about 28 extra forwards per image and model)",
    )
    cal.add_argument(
        "--no-calibration",
        action="store_true",
        help="skip the calibration (verify will then say CANNOT VERIFY)",
    )
    _batch_args(p, engines=False)
    _common(p)
    p.set_defaults(handler=cmd_reference_build)

    p = sub.add_parser(
        "verify",
        help="verify a model on a folder against a reference bundle: evidence lines and the verdict",
        description="Judge a model on a dataset from independent lines of evidence (METHODS.md §3): E0 input "
        "validity, E1 task performance per class (labels), E2 localisation and E4 finding counterfactual "
        "(annotations), E3 reliance outside the anatomy, E5 agreement with the reference maps, E6 "
        "faithfulness. Verdict per class and per model: SUITABLE, UNSUITABLE (a decisive line failed; named) "
        "or CANNOT VERIFY (what is missing is said). Exit 0: SUITABLE; 3: UNSUITABLE; 4: CANNOT VERIFY; "
        "1: failure; 2: usage.",
    )
    _model_args(p)
    p.add_argument(
        "inputs", nargs="+", help="image files and/or folders (or, with --labelled, one labelled source)"
    )
    p.add_argument("--bundle", required=True, help="reference bundle (from 'reference build')")
    p.add_argument(
        "--labelled",
        action="store_true",
        help="read the input as labelled (class subfolders or a CSV of path,label): adds labels and E1",
    )
    p.add_argument("--annotations", help="folder of finding masks named <image stem>_lesion.png (E2, E4)")
    p.add_argument(
        "--anatomy", help="folder of anatomy masks named <image stem>_lung.png (E3; default: automatic)"
    )
    p.add_argument("--gate", help="a model with a garbage class that screens the inputs (E0)")
    p.add_argument(
        "--min-images",
        type=_positive_int,
        default=20,
        help="assessable images a class needs before it can be judged suitable (20)",
    )
    p.add_argument(
        "--no-counterfactuals",
        action="store_true",
        help="skip E3's and E4's counterfactual forwards (then they are not assessable: CANNOT VERIFY)",
    )
    p.add_argument(
        "--no-faithfulness",
        action="store_true",
        help="skip E6 (deletion/insertion: about 4 × 11 extra forwards per image)",
    )
    p.add_argument(
        "--json",
        dest="json_out",
        help="write the result document (verdict, lines, images, provenance) as JSON",
    )
    p.add_argument("--csv", dest="csv_out", help="write the per-image table as CSV")
    p.add_argument("--examples", type=_non_negative_int, default=8, help="maps kept for the report (8)")
    _batch_args(p)
    _common(p)
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser(
        "report",
        help="the self-contained HTML report (and/or a PDF to file) of a verify result",
        description="Render the JSON written by 'verify --json' as one HTML file that works offline "
        "(pictures embedded as JPEG, band charts as inline SVG) and/or as a PDF of a few pages (verdict, "
        "evidence lines with their numbers, example images with their sentence); each says when it was made.",
    )
    p.add_argument("result", help="the verify result (JSON from 'verify --json' or the dashboard's download)")
    p.add_argument("-o", "--out", help="HTML file to write (a name ending in .pdf writes the PDF)")
    p.add_argument("--pdf", dest="pdf_out", help="PDF file to write (beside or instead of the HTML)")
    p.add_argument("--title", default="Attention-map verification", help="the report's title")
    _common(p)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser(
        "consistency",
        help="C-Score (attention consistency per class) over training checkpoints, beside AUC",
        description="For each checkpoint, in the order given: AUC, accuracy and the C-Score per CAM method "
        "and class on a labelled image set, with early warnings (C-Score falling while AUC holds).",
    )
    p.add_argument("checkpoints", nargs="+", help="model files in training order (sidecar JSON beside each)")
    p.add_argument(
        "--data", required=True, help="labelled images: a folder of class subfolders, or a CSV path,label"
    )
    p.add_argument(
        "--methods",
        type=_methods,
        default=("gradcam",),
        help="comma-separated map methods (gradcam; 'methods' lists them)",
    )
    p.add_argument("--layer", help="target layer (default: each checkpoint's default layer)")
    p.add_argument("--tau", type=float, default=0.9, help="gold-list confidence threshold τ (0.9)")
    p.add_argument("--gamma", type=float, default=2.0, help="intensity exponent γ (2)")
    p.add_argument("--max-pairs", type=_positive_int, help="sample at most this many pairs per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair sampling (0)")
    p.add_argument("--drop", type=float, default=0.1, help="C-Score drop that raises an early warning (0.1)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per forward pass (16)")
    p.add_argument("--strict", action="store_true", help="fail (exit 1) on the first unreadable image")
    p.add_argument(
        "--trust", action="store_true", help="allow pickled checkpoints (runs code from the files)"
    )
    p.add_argument("--json", dest="json_out", help="write the full series as JSON here")
    p.add_argument(
        "--csv", dest="csv_out", help="write the long table (checkpoint, method, class) as CSV here"
    )
    _common(p)
    p.set_defaults(handler=cmd_consistency)

    return parser


# -------------------------------------------------------------------------------------------------- commands


def _label_indices(labels: Sequence[str], class_names: Sequence[str], source: str) -> list[int]:
    """Class names (or indices written as numbers) → indices into the model's classes."""
    out = []
    for label in labels:
        if label in class_names:
            out.append(list(class_names).index(label))
        elif label.isdigit() and int(label) < len(class_names):
            out.append(int(label))
        else:
            raise CliError(f"{source}: label {label!r} is not one of the model's classes {list(class_names)}")
    return out


def _load_model(args: argparse.Namespace) -> Any:
    from verification.batch import ModelSpec

    spec = ModelSpec(path=args.model, sidecar=args.sidecar, architecture=args.architecture, trust=args.trust)
    if not Path(spec.path).exists():
        raise CliError(f"model file {spec.path} does not exist")
    return spec, spec.load()


def cmd_methods(args: argparse.Namespace) -> int:
    """Every registered method: name, kind, label, options, reference (the registry's listing)."""
    from verification.cam.methods import METHODS, option_names

    rows = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "label": spec.label,
            "options": sorted(option_names(spec.name)),
            "reference": spec.reference,
        }
        for spec in METHODS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    kind_width = max(len(r["kind"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['kind']:<{kind_width}}  {r['label']} ({r['reference']})")
    return EXIT_OK


def cmd_layers(args: argparse.Namespace) -> int:
    from verification.cam.layers import default_target_layer, list_layers

    _, model = _load_model(args)
    shape = (1, model.in_channels, *model.input_size)
    layers = list_layers(model.module, shape)
    default = default_target_layer(model.module, shape)
    rows = [
        {"name": info.name, "type": info.type, "output_shape": list(info.output_shape or ())}
        for info in layers
        if args.all or info.spatial
    ]
    if args.json:
        sys.stdout.write(
            dumps({"model": args.model, "input_shape": list(shape), "default": default, "layers": rows})
        )
        return EXIT_OK
    width = max([len(r["name"]) for r in rows] + [5])
    type_width = max([len(r["type"]) for r in rows] + [4])
    lines = [f"  {'layer':<{width}}  {'type':<{type_width}}  output"]
    for r in rows:
        mark = "*" if r["name"] == default else " "
        shape_text = "×".join(str(s) for s in r["output_shape"])
        lines.append(f"{mark} {r['name']:<{width}}  {r['type']:<{type_width}}  {shape_text}")
    lines.append(f"default target layer (*): {default}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _engine_options(args: argparse.Namespace) -> Any:
    from verification.engines import EngineOptions

    return EngineOptions(
        engine=getattr(args, "engine", "local"),
        batch_size=args.batch_size,
        workers=args.workers,
        ray_address=getattr(args, "ray_address", None),
        ray_num_cpus=getattr(args, "ray_cpus", 2),
    )


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.quiet else None


def _check_row(row: dict[str, Any], args: argparse.Namespace) -> None:
    if row.get("error"):
        if args.strict:
            raise CliError(f"{row['path']}: {row['error']} (--strict stops at the first unreadable image)")
        log.warning("skipped %s: %s", row["path"], row["error"])


def _output_stems(paths: Sequence[Path], inputs: Sequence[str]) -> list[str]:
    """Relative output names mirroring each image's place under the input folder it came from; unique."""
    roots = [Path(i).resolve() for i in inputs if Path(i).is_dir()]
    stems: list[str] = []
    used: set[str] = set()
    for path in paths:
        resolved = path.resolve()
        rel: Path | None = None
        for root in roots:
            if resolved.is_relative_to(root):
                rel = resolved.relative_to(root)
                break
        stem = (rel.with_suffix("") if rel is not None else Path(path.stem)).as_posix()
        candidate, n = stem, 1
        while candidate in used:
            n += 1
            candidate = f"{stem}-{n}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def cmd_cam(args: argparse.Namespace) -> int:
    from verification.batch import CamJob, scan_images
    from verification.engines import run_job

    check_output_dir(Path(args.out), force=args.force)  # before the slow part
    verdict = _pacs_verdict(args)
    paths = scan_images(args.inputs)
    spec, model = _load_model(args)
    if not paths:
        raise CliError(f"no images found in {', '.join(args.inputs)}")
    stems = _output_stems(paths, args.inputs)
    job = CamJob(
        spec, methods=args.methods, layers=args.layer, target=args.target, keep_display=not args.no_overlays
    )
    job.setup(model)
    options = _engine_options(args)
    entries: list[dict[str, Any]] = []
    keys: list[str] = []
    to_store: list[Any] = []
    with atomic_dir(args.out, force=args.force) as staging:
        for row in run_job(job, paths, options, progress=_progress(args)):
            stem = stems[int(row["index"])]
            entry: dict[str, Any] = {"path": str(row["path"]), "error": row["error"]}
            _check_row(row, args)
            if not row["error"]:
                keys = list(row["maps"])
                entry.update(_write_cam_row(staging, stem, row, model, overlays=not args.no_overlays))
                if args.pacs_store:
                    to_store.append(_pacs_record(row, entry, model.class_names))
            entries.append(entry)
        failed = sum(1 for e in entries if e["error"])
        if failed == len(entries):
            raise CliError(
                f"none of the {len(entries)} images could be processed; first error: {entries[0]['error']}"
            )
        manifest = {
            "schema": "verification.cli.cam",
            "schema_version": 1,
            "model": {"path": args.model, "name": model.name, "class_names": list(model.class_names)},
            "methods": list(args.methods),
            "results": keys,
            "target": args.target,
            "engine": options.engine,
            "batch_size": options.batch_size,
            "images": entries,
            "n_images": len(entries),
            "n_errors": failed,
            "overlays": not args.no_overlays,
        }
        # Written last: a folder with manifest.json is complete.
        (staging / "manifest.json").write_text(dumps(manifest), encoding="utf-8")
    if not args.quiet:
        sys.stderr.write(
            f"cam: {len(entries) - failed} images → {args.out}"
            + (f", {failed} unreadable" if failed else "")
            + "\n"
        )
    if to_store:
        from verification.pacs.sources import store_cam_records

        stored = store_cam_records(to_store, model=model.name, verdict=verdict)
        if not args.quiet:
            sys.stderr.write(f"cam: {stored} heatmap object(s) stored in the PACS, in a new series\n")
    return EXIT_OK


def _pacs_verdict(args: argparse.Namespace) -> str:
    """The verdict to record in heatmaps stored back (``--pacs-verdict``), checked before the slow part."""
    from verification.pacs import is_dicomweb

    if args.pacs_store and args.no_overlays:
        raise CliError("--pacs-store stores the overlays: drop --no-overlays")
    if args.pacs_store and not any(is_dicomweb(i) for i in args.inputs):
        raise CliError("--pacs-store needs inputs from a PACS (dicomweb+http://host:port/…/studies/<uid>)")
    if args.pacs_verdict is None:
        return "not verified"
    if not args.pacs_store:
        raise CliError("--pacs-verdict is recorded only with --pacs-store")
    from verification.verdict.records import VerificationReport

    try:
        doc = json.loads(Path(args.pacs_verdict).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"--pacs-verdict {args.pacs_verdict}: not a readable JSON file ({exc})") from None
    report = VerificationReport.from_document(doc)
    line = f" ({report.deciding_line})" if report.deciding_line else ""
    return f"{report.label}{line}"


def _pacs_record(row: dict[str, Any], entry: dict[str, Any], class_names: Sequence[str]) -> Any:
    from verification.pacs import origin
    from verification.pacs.sources import CamRecord

    if origin(row["path"]) is None:
        raise CliError(f"{row['path']} was not read from a PACS; --pacs-store takes only dicomweb+ inputs")
    target = int(entry["target"])
    name = class_names[target] if 0 <= target < len(class_names) else str(target)
    return CamRecord(str(row["path"]), row["display"], dict(row["maps"]), name)


def _write_cam_row(
    staging: Path, stem: str, row: dict[str, Any], model: Any, *, overlays: bool
) -> dict[str, Any]:
    from verification.batch import save_image_cams
    from verification.report import overlay_png

    npz = staging / f"{stem}.npz"
    npz.parent.mkdir(parents=True, exist_ok=True)
    save_image_cams(npz, row, class_names=model.class_names)
    written: dict[str, str] = {}
    if overlays and "display" in row:
        layers = {key.split("@", 1)[1] for key in row["maps"]}
        for key, cam in row["maps"].items():
            method, layer = key.split("@", 1)
            name = f"{stem}.{method}.png" if len(layers) == 1 else f"{stem}.{method}@{layer}.png"
            (staging / name).write_bytes(overlay_png(row["display"], cam))
            written[key] = name
    pred = int(row["pred"])
    return {
        "npz": npz.relative_to(staging).as_posix(),
        "overlays": written,
        "pred": pred,
        "pred_class": model.class_names[pred] if pred < len(model.class_names) else str(pred),
        "prob": float(row["probs"][pred]),
        "target": int(row["target"]),
        "constant": {k: bool(v) for k, v in row["constant"].items()},
    }


def cmd_report(args: argparse.Namespace) -> int:
    from verification.errors import BundleError
    from verification.report import render_report

    source = Path(args.result)
    if not source.is_file():
        raise CliError(f"verify result {source} does not exist")
    try:
        doc = json.loads(source.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{source} is not a JSON verify result: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleError(f"{source} is not a JSON verify result")
    from verification.verdict import VerificationReport

    report = VerificationReport.from_document(doc)
    html_out, pdf_out = args.out, args.pdf_out
    if html_out is not None and str(html_out).lower().endswith(".pdf"):
        html_out, pdf_out = None, pdf_out or html_out
    if html_out is None and pdf_out is None:
        raise CliError("say where to write the report: -o report.html and/or --pdf report.pdf")
    for target in (html_out, pdf_out):
        if target is None:
            continue
        if target == pdf_out:
            from verification.report_pdf import render_pdf

            with atomic_file(target) as tmp:
                tmp.write_bytes(render_pdf(report, title=args.title))
        else:
            write_text_atomic(target, render_report(report, title=args.title))
        if not args.quiet:
            sys.stderr.write(f"report → {target}\n")
    return EXIT_OK


def cmd_consistency(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from verification.batch import read_images, scan_labelled
    from verification.consistency import track_checkpoints
    from verification.io.models import load_model

    missing = [c for c in args.checkpoints if not Path(c).is_file()]
    if missing:
        raise CliError(f"checkpoint file(s) not found: {', '.join(missing)}")
    paths, labels = scan_labelled(args.data)
    first = load_model(args.checkpoints[0], trust=args.trust)
    y = _label_indices(labels, first.class_names, args.data)
    # as in cam and verify: an unreadable file is left out and named (--strict: the first one fails the run)
    images, kept, errors = read_images(paths)
    for row in errors:
        _check_row(row, args)
    if not images:
        raise CliError(f"none of the {len(paths)} images could be read; first error: {errors[0]['error']}")
    with tqdm(
        total=len(args.checkpoints), unit="ckpt", disable=True if args.quiet else None, leave=False
    ) as bar:
        series = track_checkpoints(
            [first, *args.checkpoints[1:]],
            images,
            [y[i] for i in kept],
            methods=args.methods,
            layer=args.layer,
            names=[Path(c).stem for c in args.checkpoints],
            tau=args.tau,
            gamma=args.gamma,
            max_pairs=args.max_pairs,
            seed=args.seed,
            drop=args.drop,
            batch_size=args.batch_size,
            trust=args.trust,
            progress=lambda done, total, name: bar.update(1),
        )
    if args.json_out:
        write_text_atomic(args.json_out, series.to_json() + "\n")
    if args.csv_out:
        write_text_atomic(args.csv_out, series.to_frame().to_csv(index=False))
    sys.stdout.write(series.table().to_string(index=False, float_format=lambda v: f"{v:.3f}") + "\n")
    for warning in series.warnings:  # a dip that came back is said as such: it is not drift
        kind = "note (recovered dip)" if warning.recovered else "warning"
        sys.stdout.write(f"{kind}: {warning.message()}\n")
    if errors:
        sys.stdout.write(
            f"warning: {len(errors)} unreadable image(s) left out: "
            + "; ".join(f"{Path(e['path']).name}: {e['error']}" for e in errors[:3])
            + ("; …" if len(errors) > 3 else "")
            + "\n"
        )
    return EXIT_OK


def _grid(text: str) -> str | tuple[int, int]:
    """``native``, ``N`` (N×N) or ``HxW`` (each side 1–4096)."""
    if text.strip().lower() == "native":
        return "native"
    parts = text.lower().replace("×", "x").split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        if len(parts) > 2 or not (1 <= h <= 4096 and 1 <= w <= 4096):
            raise ValueError
    except ValueError:
        msg = f"expected 'native', N or HxW (sides 1-4096), got {text[:40]!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return h, w


def cmd_reference_build(args: argparse.Namespace) -> int:
    from verification.batch import scan_labelled
    from verification.reference import build_reference_from_paths

    paths, labels = scan_labelled(args.data)
    _, model = _load_model(args)
    y = _label_indices(labels, model.class_names, args.data)
    for flag, folder in (("--annotations", args.annotations), ("--anatomy", args.anatomy)):
        if folder is not None and not Path(folder).is_dir():
            raise CliError(f"{flag} {folder} is not a folder")
    healthy = {Path(p).stem: _load_other(p, args) for p in args.healthy}
    bad = {Path(p).stem: _load_other(p, args) for p in args.bad}
    bundle, used, skipped = build_reference_from_paths(
        model, paths, y, method=args.method, layer=args.layer, correct_only=not args.all_images,
        batch_size=args.batch_size, workers=args.workers, progress=_progress(args) is not False,
        calibrate=not args.no_calibration, healthy=healthy, bad=bad, annotation_dir=args.annotations,
        anatomy_dir=args.anatomy,
        faithfulness=args.faithfulness,
        grid=tuple(model.input_size) if args.grid == "native" else args.grid,
    )  # fmt: skip
    npz, manifest = _save_bundle(bundle, Path(args.out))
    if not args.quiet:
        counts = ", ".join(f"{n}: {int(c)}" for n, c in zip(model.class_names, bundle.counts))
        cal = "no calibration" if bundle.calibration is None else f"calibration: {bundle.calibration.scheme}"
        sys.stderr.write(
            f"reference bundle → {npz} (+ {manifest.name}); {used} of {len(paths)} images used "
            f"({counts})" + (f"; {skipped} unreadable" if skipped else "") + f"; {cal}\n"
        )
    return EXIT_OK


def _load_other(path: str, args: argparse.Namespace) -> Any:
    from verification.io.models import load_model

    if not Path(path).is_file():
        raise CliError(f"model file {path} does not exist")
    return load_model(path, trust=args.trust, name=Path(path).stem)


def _bundle_files(path: Path) -> tuple[Path, Path]:
    """A bundle's ``(<stem>.npz, <stem>.json)`` from ``<stem>``, ``<stem>.npz`` or ``<stem>.json``."""
    stem = path.with_suffix("") if path.suffix in (".npz", ".json") else path
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def _save_bundle(bundle: Any, out: Path) -> tuple[Path, Path]:
    """Save a bundle's two files atomically: both are written in a staging folder, the old manifest (if any)
    is removed, the arrays moved into place, and the manifest — what makes a bundle loadable — moved last."""
    npz, manifest = _bundle_files(out)
    stem = npz.with_suffix("")
    npz.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem.name}.", suffix=".partial", dir=npz.parent))
    try:
        written = bundle.save(staging / stem.name)
        manifest.unlink(missing_ok=True)
        os.replace(written, npz)
        os.replace(written.with_suffix(".json"), manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return npz, manifest


def cmd_verify(args: argparse.Namespace) -> int:
    from verification.batch import ModelSpec, VerifyJob, merge_verify_rows, scan_images, scan_labelled
    from verification.engines import run_job
    from verification.verdict import VerdictConfig

    labels: list[str] | None = None
    if args.labelled:
        if len(args.inputs) != 1:
            raise CliError("--labelled takes exactly one input: a folder of class subfolders or a CSV")
        paths, labels = scan_labelled(args.inputs[0])
    else:
        paths = scan_images(args.inputs)
    if not paths:
        raise CliError(f"no images found in {', '.join(args.inputs)}")
    missing = [p for p in _bundle_files(Path(args.bundle)) if not p.is_file()]
    if missing:
        raise CliError(f"reference bundle {args.bundle}: {', '.join(map(str, missing))} not found")
    for flag, folder in (("--annotations", args.annotations), ("--anatomy", args.anatomy)):
        if folder is not None and not Path(folder).is_dir():
            raise CliError(f"{flag} {folder} is not a folder")
    if args.gate is not None and not Path(args.gate).is_file():
        raise CliError(f"gate model {args.gate} does not exist")
    spec, model = _load_model(args)
    config = VerdictConfig(
        min_images=args.min_images,
        faithfulness=not args.no_faithfulness,
        counterfactuals=not args.no_counterfactuals,
    )
    job = VerifyJob(
        spec, args.bundle, labels=labels, annotation_dir=args.annotations, anatomy_dir=args.anatomy,
        gate=ModelSpec(path=args.gate, trust=args.trust) if args.gate else None, config=config,
    )  # fmt: skip
    job.setup(model)
    if model.task == "multilabel" and job.mismatch is None:  # one verdict per label
        report = _verify_labels(args, job, model, paths, labels)
    else:
        if labels is not None:
            unknown = sorted(set(labels) - set(job.bundle.class_names))
            if unknown:
                raise CliError(
                    f"labels {unknown} are not classes of the bundle {list(job.bundle.class_names)}"
                )
        rows = []
        if job.mismatch is None:
            for row in run_job(job, paths, _engine_options(args), progress=_progress(args)):
                _check_row(row, args)
                rows.append(row)
        report = merge_verify_rows(rows, job)
    doc = verify_document(args, report)
    if args.json_out:
        write_text_atomic(args.json_out, dumps(doc))
    if args.csv_out:
        write_text_atomic(args.csv_out, verify_table(report).to_csv(index=False))
    out = [report.text()]
    if report.errors:
        out.append(f"{len(report.errors)} unreadable image(s) left out of the verdict (see the table)")
    out.extend(f"warning: {w}" for w in report.warnings)
    sys.stdout.write("\n".join(out) + "\n")
    return VERDICT_EXIT[report.verdict]


def _verify_labels(
    args: argparse.Namespace, job: Any, model: Any, paths: list[Path], labels: list[str] | None
) -> Any:
    """A multi-label model: one verdict per label (:mod:`verification.verdict.multilabel`), local engine.
    With ``--labelled``, a label is a class subfolder's name, or in a CSV one name or several joined by "|"
    (``Effusion|Nodule``; an empty cell: none of the labels); finding masks stand for each of their image's
    labels."""
    from verification.anatomy import MASK_SUFFIXES
    from verification.batch import LESION_SUFFIXES
    from verification.verdict import verify

    if args.engine != "local":
        raise CliError(
            "a multi-label model is verified label by label on the local engine: use --engine local"
        )
    ann = [job._mask(args.annotations, str(p), LESION_SUFFIXES) for p in paths] if args.annotations else None
    roi = [job._mask(args.anatomy, str(p), MASK_SUFFIXES) for p in paths] if args.anatomy else None
    gate = job.gate_spec.load() if job.gate_spec is not None else None
    sets = None if labels is None else [[] if lab == "" else lab for lab in labels]
    return verify(
        model, job.bundle, [str(p) for p in paths], sets, annotations=ann, anatomy=roi, gate=gate,
        config=job.config, batch_size=args.batch_size,
    )  # fmt: skip


def verify_document(args: argparse.Namespace, report: Any) -> dict[str, Any]:
    """The verify result as written by ``--json``: the report's one document, examples trimmed to
    ``--examples``, with the run's paths and engine added to the provenance."""
    import dataclasses

    report = dataclasses.replace(report, examples=report.examples[: args.examples])
    doc: dict[str, Any] = report.to_document()
    doc["provenance"] = {
        **doc["provenance"],
        "run": {
            "model_path": str(args.model), "bundle_path": str(args.bundle), "inputs": list(args.inputs),
            "engine": args.engine, "batch_size": args.batch_size, "labelled": bool(args.labelled),
            "annotations": args.annotations, "anatomy": args.anatomy, "gate": args.gate,
        },
    }  # fmt: skip
    return doc


def verify_table(report: Any) -> Any:
    """One row per image (status ok / not assessable / error) with the line values."""
    import pandas as pd

    records = []
    for im in report.images:
        records.append(
            {
                "image": im.name, "status": "ok" if im.assessable else "not assessable", "label": im.label,
                "predicted": im.predicted, "probability": max(im.probabilities) if im.probabilities else None,
                **dict(im.values), "why": im.why,
            }
        )  # fmt: skip
    records += [{"image": name, "status": "error", "why": err} for name, err in report.errors]
    return pd.DataFrame.from_records(records).convert_dtypes()


def _directions(metrics: Sequence[str]) -> dict[str, bool]:
    from verification.metrics import METRICS

    return {m: bool(METRICS[m].higher_is_better) for m in metrics}


# ------------------------------------------------------------------------------------------------------ main


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if args.quiet:
        logging.getLogger().setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers:  # -q also for libraries that set their own logger's level
        if getattr(handler, "stream", None) is sys.stderr:  # when imported later (pydicom's tag warnings)
            handler.setLevel(logging.ERROR if args.quiet else logging.NOTSET)
    if not (args.verbose or args.debug):
        # torch's advisory warnings (pickle protocol, ...) are noise for a CLI user; -v shows them.
        warnings.filterwarnings("ignore", module=r"torch(\.|$)")
        # pydicom warns about malformed tags it still parses; the loader checks those itself (typed errors)
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        # NaN medians of an all-NaN metric column are reported as NaN in the table; numpy's note adds nothing.
        warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write("interrupted; no partial output was kept\n")
        return EXIT_INTERRUPTED
    except (VerificationError, OSError, ValueError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"error: {_describe(exc)}\n")
        return EXIT_FAILURE
    except Exception as exc:
        if args.debug:
            raise
        sys.stderr.write(f"internal error: {_describe(exc)} (run again with --debug for the traceback)\n")
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(exc: BaseException) -> str:
    from verification.errors import UntrustedFileError

    text = str(exc) or type(exc).__name__
    if isinstance(exc, UntrustedFileError):
        return f"{text} On the command line, add --trust to load it anyway, only if you trust its source."
    if isinstance(exc, (VerificationError, FileNotFoundError)):
        return text
    return f"{type(exc).__name__}: {text}"
