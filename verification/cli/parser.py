"""The argument parser: every command, its options and the argument types."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from verification.cli.cam import cmd_cam
from verification.cli.commands import cmd_consistency, cmd_layers, cmd_methods, cmd_report
from verification.cli.verify import cmd_reference_build, cmd_verify


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


def _command(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    """What every command ends with: the output and diagnostics options, and its handler."""
    group = parser.add_argument_group("output and diagnostics")
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or summary lines on stderr"
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log what is being done (stderr)")
    group.add_argument("--debug", action="store_true", help="show the full traceback when something fails")
    parser.set_defaults(handler=handler)


def _table_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _methods_arg(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--methods", type=_methods, default=("gradcam",), help=help)


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
        help="allow unpickling MODEL (the main model file only); this runs code from the file, so only for a "
        "file you trust. Other model files of a command (--healthy, --bad, --gate) are trusted one by one "
        "with --trust-other PATH",
    )


def _trust_other_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: str) -> None:
    parser.add_argument(
        "--trust-other",
        action="append",
        default=[],
        metavar="PATH",
        help=f"allow unpickling this one model file given to {flags} (repeat per file); runs code from it. "
        "--trust covers only MODEL",
    )


def _batch_args(parser: argparse.ArgumentParser, *, engines: bool = True, workers: bool = True) -> None:
    group = parser.add_argument_group("batching")
    group.add_argument("--batch-size", type=_positive_int, default=16, help="images per forward pass (16)")
    if workers:
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
    _table_args(p)
    _command(p, cmd_layers)

    p = sub.add_parser(
        "methods", help="list the map methods (CAMs and pixel attributions) that --methods accepts"
    )
    _table_args(p)
    _command(p, cmd_methods)

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
    _methods_arg(
        p,
        "comma-separated map methods (default gradcam): any registered one, CAMs or pixel attributions "
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
    _command(p, cmd_cam)

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
    _trust_other_arg(cal, "--healthy or --bad")
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
    _command(p, cmd_reference_build)

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
    _trust_other_arg(p, "--gate")
    p.add_argument(
        "--min-images",
        type=_positive_int,
        default=20,
        help="assessable images a class needs before it can be judged suitable (20)",
    )
    p.add_argument(
        "--no-finding-class",
        action="append",
        default=None,
        metavar="NAME",
        help="a class that means no finding (e.g. normal; repeat for several): only such a class may rest on "
        "the other classes' reliance evidence (default: common names such as normal, no finding, healthy, "
        "negative)",
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
    _command(p, cmd_verify)

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
    _command(p, cmd_report)

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
    _methods_arg(p, "comma-separated map methods (gradcam; 'methods' lists them)")
    p.add_argument("--layer", help="target layer (default: each checkpoint's default layer)")
    p.add_argument("--tau", type=float, default=0.9, help="gold-list confidence threshold τ (0.9)")
    p.add_argument("--gamma", type=float, default=2.0, help="intensity exponent γ (2)")
    p.add_argument("--max-pairs", type=_positive_int, help="sample at most this many pairs per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair sampling (0)")
    p.add_argument("--drop", type=float, default=0.1, help="C-Score drop that raises an early warning (0.1)")
    p.add_argument(
        "--trust", action="store_true", help="allow pickled checkpoints (runs code from the files)"
    )
    p.add_argument("--json", dest="json_out", help="write the full series as JSON here")
    p.add_argument(
        "--csv", dest="csv_out", help="write the long table (checkpoint, method, class) as CSV here"
    )
    _batch_args(p, engines=False, workers=False)
    _command(p, cmd_consistency)

    return parser


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
