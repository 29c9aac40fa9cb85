"""The model sidecar JSON (``<stem>.json`` beside the weights), validated against a schema with types and
bounds before anything is built from it. An unknown key is an error, never a keyword argument passed on.

=============== ================================================================= =========================
key             type                                                              bounds
=============== ================================================================= =========================
architecture    string: a torchvision family name, ``timm/<name>`` or ``unet``    ≤ 100 characters
arch_kwargs     object, keys per architecture (``architectures.ARCH_KWARGS``)     per key (e.g. width_mult)
in_channels     integer                                                           1 … 16
num_classes     integer                                                           1 … 10,000
class_names     list of distinct strings                                          1 … 10,000, each ≤ 200
input_size      integer or [height, width]                                        16 … 1,024 each
mean            number or list of numbers                                         finite, |x| ≤ 1,000
std             number or list of numbers                                         finite, 1e-6 … 1,000
task            "classification", "multilabel" or "segmentation"
garbage_class   one of class_names                                                ≤ 200 characters
=============== ================================================================= =========================

The file itself: at most 1 MiB, nesting at most 8 levels, numbers of at most 40 characters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

from verification.errors import ModelLoadError
from verification.io.architectures import check_arch_kwargs
from verification.io.files import read_regular_file
from verification.io.records import LoadedModel, Task
from verification.io.safejson import bounded_text, loads_bounded

__all__ = [
    "MAX_CLASSES",
    "MAX_INPUT_SIDE",
    "MAX_IN_CHANNELS",
    "SIDECAR_KEYS",
    "Sidecar",
    "parse_sidecar",
    "read_sidecar_bytes",
    "read_sidecar_file",
    "sidecar_bytes",
    "sidecar_document",
    "sidecar_of",
]

MAX_SIDECAR_BYTES = 1 << 20
MAX_SIDECAR_DEPTH = 8
MAX_IN_CHANNELS = 16
MAX_CLASSES = 10_000
MAX_NAME_CHARS = 200
MIN_INPUT_SIDE = 16
MAX_INPUT_SIDE = 1024
MAX_NORM_ABS = 1000.0
MIN_STD = 1e-6

SIDECAR_KEYS = frozenset(
    {
        "architecture",
        "arch_kwargs",
        "in_channels",
        "num_classes",
        "class_names",
        "input_size",
        "mean",
        "std",
        "task",
        "garbage_class",
    }
)


@dataclass(frozen=True)
class Sidecar:
    """The validated JSON sidecar; ``None`` means "not given"."""

    architecture: str | None = None
    arch_kwargs: Mapping[str, Any] | None = None
    in_channels: int | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    task: Task | None = None
    garbage_class: str | None = None


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ModelLoadError(
            f"sidecar key '{key}' must be an integer from {lo:,} to {hi:,}, got {bounded_text(value)}"
        )
    return value


def _name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise ModelLoadError(
            f"sidecar key '{key}' must hold strings of 1 to {MAX_NAME_CHARS} characters, got "
            f"{bounded_text(value)}"
        )
    return value


def _numbers(value: Any, key: str, lo: float, hi: float) -> tuple[float, ...]:
    """A number or a list of 1 … 16 numbers, each finite and in [lo, hi] (|x| for mean)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not 0 < len(value) <= MAX_IN_CHANNELS:
        raise ModelLoadError(
            f"sidecar key '{key}' must be a number or a list of 1 to {MAX_IN_CHANNELS} numbers, got "
            f"{bounded_text(value)}"
        )
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ModelLoadError(f"sidecar key '{key}' must hold numbers, got {bounded_text(v)}")
        f = float(v)
        if not math.isfinite(f):
            raise ModelLoadError(f"sidecar key '{key}' holds {f}, which is not a finite number")
        if not lo <= f <= hi:
            raise ModelLoadError(f"sidecar key '{key}' must hold numbers from {lo:g} to {hi:g}, got {f:g}")
        out.append(f)
    return tuple(out)


def _class_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ModelLoadError(
            f"sidecar key 'class_names' must be a non-empty list of strings, got {bounded_text(value)}"
        )
    if len(value) > MAX_CLASSES:
        raise ModelLoadError(
            f"sidecar key 'class_names' lists {len(value):,} names; at most {MAX_CLASSES:,} are accepted"
        )
    names = tuple(_name(v, "class_names") for v in value)
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dups = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
        raise ModelLoadError(f"sidecar key 'class_names' has duplicates: {bounded_text(dups[:5])}")
    return names


def _input_size(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ModelLoadError(f"sidecar key 'input_size' must be [height, width], got {bounded_text(value)}")
    h, w = (_int(v, "input_size", MIN_INPUT_SIDE, MAX_INPUT_SIDE) for v in value)
    return h, w


def parse_sidecar(raw: Mapping[str, Any] | None) -> Sidecar:
    """Validate a parsed sidecar (see the module table); raises ModelLoadError naming the key at fault."""
    if raw is None:
        return Sidecar()
    if not isinstance(raw, Mapping):
        raise ModelLoadError("the model sidecar JSON must be an object with keys such as 'architecture'")
    unknown = [str(k) for k in raw if k not in SIDECAR_KEYS]
    if unknown:
        shown = ", ".join(bounded_text(k, 40) for k in unknown[:5])
        raise ModelLoadError(
            f"unknown sidecar key(s) {shown}{' …' if len(unknown) > 5 else ''}; accepted keys: "
            f"{', '.join(sorted(SIDECAR_KEYS))}"
        )
    arch = raw.get("architecture")
    if arch is not None and (not isinstance(arch, str) or not 0 < len(arch) <= 100):
        raise ModelLoadError(f"sidecar key 'architecture' must be a name, got {bounded_text(arch)}")
    kwargs = raw.get("arch_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, Mapping):
            raise ModelLoadError(f"sidecar key 'arch_kwargs' must be an object, got {bounded_text(kwargs)}")
        if kwargs and arch is None:
            raise ModelLoadError("sidecar key 'arch_kwargs' needs 'architecture' beside it")
        kwargs = check_arch_kwargs(arch, kwargs) if arch is not None else {}
    task = raw.get("task")
    if task is not None and task not in get_args(Task):
        raise ModelLoadError(f"sidecar key 'task' must be one of {get_args(Task)}, got {bounded_text(task)}")
    garbage = raw.get("garbage_class")
    return Sidecar(
        architecture=arch,
        arch_kwargs=dict(kwargs) if kwargs is not None else None,
        in_channels=_int(raw["in_channels"], "in_channels", 1, MAX_IN_CHANNELS)
        if raw.get("in_channels") is not None
        else None,
        num_classes=_int(raw["num_classes"], "num_classes", 1, MAX_CLASSES)
        if raw.get("num_classes") is not None
        else None,
        class_names=_class_names(raw["class_names"]) if raw.get("class_names") is not None else None,
        input_size=_input_size(raw["input_size"]) if raw.get("input_size") is not None else None,
        mean=_numbers(raw["mean"], "mean", -MAX_NORM_ABS, MAX_NORM_ABS)
        if raw.get("mean") is not None
        else None,
        std=_numbers(raw["std"], "std", MIN_STD, MAX_NORM_ABS) if raw.get("std") is not None else None,
        task=cast(Task | None, task),
        garbage_class=_name(garbage, "garbage_class") if garbage is not None else None,
    )


def read_sidecar_bytes(data: bytes | str, what: str = "the sidecar") -> dict[str, Any]:
    """Parse sidecar JSON with limits (size, depth, number length); ModelLoadError unless an object."""
    doc = loads_bounded(
        data, what, error=ModelLoadError, max_bytes=MAX_SIDECAR_BYTES, max_depth=MAX_SIDECAR_DEPTH
    )
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{what} must hold a JSON object")
    return doc


def read_sidecar_file(path: Path) -> dict[str, Any]:
    what = f"sidecar file '{path}'"
    data = read_regular_file(
        path,
        kind="sidecar file",
        advice="give the JSON file that describes the model",
        max_bytes=MAX_SIDECAR_BYTES,
        too_large=lambda size: f"{what} is {size:,} bytes; at most {MAX_SIDECAR_BYTES:,} are accepted",
        error=ModelLoadError,
    )
    return read_sidecar_bytes(data, what)


def sidecar_document(sc: Sidecar) -> dict[str, Any]:
    """The JSON object :func:`parse_sidecar` reads back as ``sc`` (keys in the module table's order; keys
    that are None left out)."""
    doc: dict[str, Any] = {}
    if sc.architecture is not None:
        doc["architecture"] = sc.architecture
    if sc.arch_kwargs:
        doc["arch_kwargs"] = dict(sc.arch_kwargs)
    for key in ("in_channels", "num_classes"):
        if getattr(sc, key) is not None:
            doc[key] = int(getattr(sc, key))
    if sc.class_names is not None:
        doc["class_names"] = list(sc.class_names)
    if sc.input_size is not None:
        doc["input_size"] = [int(v) for v in sc.input_size]
    for key in ("mean", "std"):
        if getattr(sc, key) is not None:
            doc[key] = [float(v) for v in getattr(sc, key)]
    if sc.task is not None:
        doc["task"] = sc.task
    if sc.garbage_class is not None:
        doc["garbage_class"] = sc.garbage_class
    parse_sidecar(doc)  # what is written must read back: a bound broken here fails now, not on upload
    return doc


def sidecar_bytes(sc: Sidecar) -> bytes:
    """``sc`` as the UTF-8 JSON file a user downloads and puts beside the weights (``<stem>.json``)."""
    return (json.dumps(sidecar_document(sc), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def sidecar_of(model: LoadedModel) -> Sidecar:
    """The sidecar that describes a loaded model (a :class:`~verification.io.records.LoadedModel`): its
    architecture (when built from one), channels, class names, input size, mean/std, task, garbage class."""
    return Sidecar(
        architecture=model.architecture,
        arch_kwargs=dict(model.arch_kwargs) or None,
        in_channels=int(model.in_channels),
        class_names=tuple(model.class_names),
        input_size=(int(model.input_size[0]), int(model.input_size[1])),
        mean=tuple(float(v) for v in model.mean),
        std=tuple(float(v) for v in model.std),
        task=model.task,
        garbage_class=model.garbage_class,
    )
