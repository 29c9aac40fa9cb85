"""Loading models safely: safetensors / state dicts + an architecture by name, torch.export programs, and
(only on explicit opt-in) whole pickled modules. TorchScript is refused because it cannot carry hooks.

Every path returns one :class:`LoadedModel` after a dry forward pass at the model's input size.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import pickle
import re
import threading
import typing
import weakref
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from verification.cam.chunking import export_batch_limits, run_chunked, set_batch_limits
from verification.errors import (
    InputTooLargeError,
    MissingFieldError,
    ModelForwardError,
    ModelLoadError,
    TorchScriptError,
    UntrustedFileError,
    VerificationError,
)
from verification.io.architectures import build_architecture, default_task
from verification.io.archive import ZIP_OPEN_ERRORS, ZipLimits, check_entries, open_zip
from verification.io.budget import (
    DEFAULT_MODEL_LIMITS,
    ModelLimits,
    check_model_decoded,
    decoded_weight_bytes,
)
from verification.io.files import read_regular_file
from verification.io.pt2 import describe_problems, untrusted_pt2_problems
from verification.io.records import LoadedModel, SourceFormat, Task, placeholder_class_names
from verification.io.safejson import loads_bounded
from verification.io.sidecar import (
    MAX_IN_CHANNELS,
    MAX_INPUT_SIDE,
    Sidecar,
    parse_sidecar,
    read_sidecar_file,
)

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_MODEL_BYTES",
    "build_architecture",
    "check_forward",
    "load_model",
    "load_model_bytes",
    "save_model",
]

logger = logging.getLogger(__name__)

# The file read into memory; what the weights decode to is bounded separately (io/budget.py, ModelLimits).
DEFAULT_MAX_MODEL_BYTES = DEFAULT_MODEL_LIMITS.max_file_bytes
DEFAULT_MAX_DECODED_BYTES = DEFAULT_MODEL_LIMITS.max_decoded_bytes
DEFAULT_INPUT_SIZE = (224, 224)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# One-channel default: the mean of the ImageNet statistics, i.e. what a grey copy of an RGB image would get.
GRAY_MEAN = (0.449,)
GRAY_STD = (0.226,)
# Beyond these, weights or dry-run outputs are corrupt or mis-scaled (trained CNNs stay many orders below).
MAX_ABS_WEIGHT = 1e12
MAX_ABS_OUTPUT = 1e6
# Activations of the dry run, measured on the meta device before it runs (ResNet-50 at 1024²: ~210 MiB).
MAX_DRY_RUN_BYTES = 1 << 30

_TRUST_ADVICE = (
    "If you trust where the file came from, opt in (trust=True, the CLI's trust flag or the dashboard's "
    "'trust this file' checkbox); better, re-save model.state_dict() as .safetensors with a JSON sidecar "
    "that names its architecture."
)

_TORCHSCRIPT_ADVICE = (
    "TorchScript modules cannot carry the forward hooks that attention maps need, so the file is not loaded. "
    "Re-save the model from Python where its class is defined, either as weights plus an architecture name "
    "(verification.io.models.save_model(model, 'model.safetensors', architecture='resnet18', ...), or "
    "safetensors.torch.save_file(model.state_dict(), 'model.safetensors') with a model.json sidecar naming "
    "the architecture), or as a torch.export program: torch.export.save(torch.export.export(model, "
    "(example_input,), dynamic_shapes=({0: torch.export.Dim('batch')},)), 'model.pt2')."
)


# ---------------------------------------------------------------------------------------------------------
# Format detection: from the bytes, never by executing anything.


def _detect_format(data: bytes, filename: str) -> str:
    """One of "safetensors", "torchscript", "export", "torch" (torch.save zip or legacy pickle)."""
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except ZIP_OPEN_ERRORS as exc:
            raise ModelLoadError(
                f"'{filename}' looks like a zip archive but is corrupt or truncated"
            ) from exc
        # entries are "<archive root>/...": TorchScript keeps its Python source under <root>/code/
        parts = [n.split("/") for n in names]
        if any((len(p) >= 3 and p[1] == "code") or p[1:] == ["constants.pkl"] for p in parts):
            return "torchscript"
        if any(p[-1] == "archive_format" for p in parts) or any(
            n.endswith("models/model.json") for n in names
        ):
            return "export"
        if any(p[-1] == "data.pkl" for p in parts):
            return "torch"
        raise ModelLoadError(
            f"'{filename}' is a zip archive but not a PyTorch, TorchScript or torch.export file"
        )
    if len(data) > 9:
        header_len = int.from_bytes(data[:8], "little")
        if 2 <= header_len <= len(data) - 8 and data[8:9] == b"{":
            return "safetensors"
    if data[:1] == b"\x80":  # pickle protocol 2+: the legacy (pre-zip) torch.save format
        return "torch"
    raise ModelLoadError(
        f"'{filename}' is not a recognised model file. Supported: .safetensors weights, a state dict "
        "saved with torch.save (.pt/.pth), or a torch.export program (.pt2)."
    )


# ---------------------------------------------------------------------------------------------------------
# Weights → module.


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "_orig_mod."):  # DataParallel, torch.compile
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    return sd


def _as_state_dict(obj: Any, filename: str, depth: int = 0) -> dict[str, torch.Tensor] | nn.Module:
    if depth > 4:
        raise ModelLoadError(
            f"'{filename}' nests its state dict more than 4 levels deep; save model.state_dict()"
        )
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module | Mapping):
                return _as_state_dict(inner, filename, depth + 1)
        keys = _summarise([str(k) for k in list(obj)[:9]], 8)
        raise ModelLoadError(
            f"'{filename}' holds a dictionary (keys: {keys}) without a state dict of tensors; save "
            "model.state_dict() instead"
        )
    raise ModelLoadError(f"'{filename}' holds a {type(obj).__name__}, not a state dict or a model")


def _probe_layer_keys(
    architecture: str, task: str, arch_kwargs: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """State-dict keys of the first conv weight and of the classifier weight, from an unallocated build."""
    try:
        with torch.device("meta"):
            probe = build_architecture(architecture, num_classes=2, in_channels=3, **arch_kwargs)
    except ModelLoadError:
        raise
    except Exception:  # some builders compute on tensors during __init__; fall back to a real build
        logger.debug("meta-device build of %s failed; building on CPU", architecture, exc_info=True)
        probe = build_architecture(architecture, num_classes=2, in_channels=3, **arch_kwargs)
    first_conv: str | None = None
    last_conv: str | None = None
    last_linear: str | None = None
    for name, module in probe.named_modules():
        if isinstance(module, nn.Conv2d):
            first_conv = first_conv or f"{name}.weight"
            last_conv = f"{name}.weight"
        elif isinstance(module, nn.Linear):
            last_linear = f"{name}.weight"
    classifier = last_conv if task == "segmentation" else (last_linear or last_conv)
    return first_conv, classifier


def _summarise(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(k if len(k) <= 80 else f"{k[:79]}…" for k in keys[:limit])
    return f"{shown}, … ({len(keys) - limit} more)" if len(keys) > limit else shown


def _check_fit(
    expected: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], architecture: str
) -> None:
    """The state dict's keys and shapes against the architecture's (``expected`` may be on meta)."""
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = sorted(k for k in sd if k not in expected)
    mismatched = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_summarise(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_summarise(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shapes differ ({_summarise(mismatched, 3)})")
        raise ModelLoadError(
            f"the weights do not fit architecture '{architecture}': {'; '.join(parts)}. Check the "
            "architecture name and arch_kwargs in the sidecar JSON (or the architecture argument)."
        )


def _check_finite_weights(named: Mapping[str, torch.Tensor], filename: str) -> None:
    """Non-finite or absurdly large weights load silently and only show as NaN maps later: refuse them."""
    for key, t in named.items():
        if not t.is_floating_point() or t.numel() == 0 or t.is_meta:
            continue
        lo_t, hi_t = torch.aminmax(t.detach())  # one pass, no copy; NaN propagates
        lo, hi = float(lo_t), float(hi_t)
        peak = max(-lo, hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ModelLoadError(
                f"'{filename}' has NaN or infinite values in '{key[:80]}'; the weights are broken (a "
                "diverged training run or a corrupt file). Use a checkpoint from before the failure."
            )
        if peak > MAX_ABS_WEIGHT:
            raise ModelLoadError(
                f"'{filename}' has a weight of magnitude {peak:.3g} in '{key[:80]}' (above "
                f"{MAX_ABS_WEIGHT:.0e}); the weights are corrupt or mis-scaled"
            )


class _ActivationMeter(TorchDispatchMode):
    """Counts the bytes of new storages alive at once while a module runs on the meta device (no memory is
    allocated): the activation peak of the dry run, before it runs for real."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, n: int) -> None:
        self._seen.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = int(storage._cdata)
                if key in self._seen:  # a view or an in-place result: no new memory
                    continue
                n = int(storage.nbytes())
                self._seen.add(key)
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, key, n)
        return out


def _check_dry_run_memory(
    probe: nn.Module, in_channels: int, size: tuple[int, int], architecture: str
) -> None:
    """Refuse a dry run whose activations (measured on the meta-device build) exceed MAX_DRY_RUN_BYTES."""
    meter = _ActivationMeter()
    try:
        with torch.no_grad(), meter:
            probe.eval()(torch.empty(1, in_channels, *size, device="meta"))
    except Exception:  # an op without a meta kernel: the real dry run will tell
        logger.debug("meta-device forward of %s failed; no activation estimate", architecture, exc_info=True)
        return
    if meter.peak > MAX_DRY_RUN_BYTES:
        raise InputTooLargeError(
            f"architecture '{architecture}' at input_size {size[0]}×{size[1]} would hold about "
            f"{meter.peak / 2**20:,.0f} MiB of activations in one forward pass, above the "
            f"{MAX_DRY_RUN_BYTES / 2**20:,.0f} MiB limit; use a smaller input_size or a narrower architecture"
        )


def _meta_build(
    architecture: str, num_classes: int, in_channels: int, kwargs: Mapping[str, Any]
) -> nn.Module | None:
    try:
        with torch.device("meta"):
            return build_architecture(
                architecture, num_classes=num_classes, in_channels=in_channels, **kwargs
            )
    except ModelLoadError:
        raise
    except Exception:  # some builders compute on tensors during __init__
        logger.debug("meta-device build of %s failed", architecture, exc_info=True)
        return None


def _resolve(name: str, from_sidecar: int | None, from_weights: int | None, default: int) -> int:
    if from_sidecar is not None and from_weights is not None and from_sidecar != from_weights:
        raise MissingFieldError(
            f"the sidecar says {name}={from_sidecar} but the weights have {from_weights}", field=name
        )
    if from_sidecar is not None:
        return from_sidecar
    return from_weights if from_weights is not None else default


def _module_from_state_dict(
    sd: dict[str, torch.Tensor], sc: Sidecar, architecture: str | None, filename: str
) -> tuple[nn.Module, str, dict[str, Any], int, int, Task]:
    arch = architecture or sc.architecture
    if arch is None:
        raise MissingFieldError(
            f"'{filename}' holds only weights; name the architecture in a JSON sidecar next to it "
            '(<stem>.json with {"architecture": "resnet18"}), or pass --architecture on the command line '
            "(architecture= in load_model).",
            field="architecture",
        )
    sd = _strip_prefixes(sd)
    # fp16/bf16 weights are upcast: the verification maths runs in float32.
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    kwargs = dict(sc.arch_kwargs or {})
    task = sc.task or cast(Task, default_task(arch))
    first_key, cls_key = _probe_layer_keys(arch, task, kwargs)
    w_in = int(sd[first_key].shape[1]) if first_key in sd and sd[first_key].ndim == 4 else None
    w_cls = int(sd[cls_key].shape[0]) if cls_key in sd else None
    in_channels = _resolve("in_channels", sc.in_channels, w_in, 3)
    n_from_names = len(sc.class_names) if sc.class_names is not None else None
    if sc.num_classes is not None and n_from_names is not None and sc.num_classes != n_from_names:
        raise ModelLoadError(
            f"the sidecar says num_classes={sc.num_classes} but lists {n_from_names} class names"
        )
    num_classes = _resolve("num_classes", sc.num_classes or n_from_names, w_cls, 1000)
    _check_finite_weights(sd, filename)
    # Shapes checked on an unallocated build first: a mismatched (or huge) architecture costs no memory.
    probe = _meta_build(arch, num_classes, in_channels, kwargs)
    if probe is not None:
        _check_fit(probe.state_dict(), sd, arch)
        _check_dry_run_memory(probe, in_channels, sc.input_size or DEFAULT_INPUT_SIZE, arch)
    model = build_architecture(arch, num_classes=num_classes, in_channels=in_channels, **kwargs)
    _check_fit(model.state_dict(), sd, arch)
    model.load_state_dict(sd, strict=False)
    return model, arch, kwargs, in_channels, num_classes, task


# ---------------------------------------------------------------------------------------------------------
# The dry run.


def probe_input(
    in_channels: int, input_size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """A realistic dry-run input (1, C, H, W): a smooth synthetic picture in [0, 1] (a vertical ramp plus a
    bright disc and a horizontal stripe pattern), normalised with the model's mean/std. Unlike zeros, it
    makes every weight contribute, so mis-scaled weights overflow here instead of on the first real image."""
    h, w = input_size
    yy = torch.linspace(0.0, 1.0, h).view(h, 1).expand(h, w)
    xx = torch.linspace(0.0, 1.0, w).view(1, w).expand(h, w)
    disc = (((yy - 0.5) ** 2 + (xx - 0.45) ** 2) < 0.06).float()
    picture = (0.15 + 0.4 * yy + 0.35 * disc + 0.1 * torch.sin(xx * 37.0)).clamp(0.0, 1.0)
    x = picture.expand(1, in_channels, h, w)
    m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous()


def _dry_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = run_chunked(module, x, module)  # padded to a batch size the model accepts
    except Exception as exc:
        raise ModelForwardError(
            f"the model raised {type(exc).__name__} on a test input of shape {tuple(x.shape)}: "
            f"{str(exc)[:300]}. Check in_channels and input_size in the sidecar JSON, or the model's code."
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise ModelForwardError(
            f"the model returned {type(out).__name__}; it must return a tensor of logits. Wrap it in a "
            "module whose forward returns that tensor."
        )
    return out


def _validate_output(out: torch.Tensor, loaded: LoadedModel) -> None:
    k = loaded.num_classes
    if loaded.task == "segmentation":
        ok = out.ndim == 4 and out.shape[1] == k
        want = f"(1, {k}, H, W)"
    else:
        ok = out.ndim == 2 and out.shape[1] == k
        want = f"(1, {k})"
    if not ok:
        raise ModelForwardError(
            f"a {loaded.task} model with {k} classes should output {want} but returned {tuple(out.shape)}; "
            "check num_classes/class_names and task in the sidecar JSON"
        )
    if not torch.isfinite(out).all():
        raise ModelForwardError(
            "the model produced NaN or infinite outputs on a test image (a synthetic picture normalised with "
            "its mean/std); its weights or normalisation are broken"
        )
    peak = float(out.abs().max()) if out.numel() else 0.0
    if peak > MAX_ABS_OUTPUT:
        raise ModelForwardError(
            f"the model produced outputs of magnitude {peak:.3g} on a test image (above "
            f"{MAX_ABS_OUTPUT:.0e}); its weights or normalisation are mis-scaled"
        )


def check_forward(loaded: LoadedModel) -> None:
    """Run one forward under no_grad on :func:`probe_input` at ``input_size``; raise ModelForwardError if it
    fails or gives non-finite or absurd outputs."""
    x = probe_input(loaded.in_channels, loaded.input_size, loaded.mean, loaded.std)
    _validate_output(_dry_forward(loaded.module, x), loaded)


# ---------------------------------------------------------------------------------------------------------
# Assembly.


def _norm(
    values: tuple[float, ...] | None, default: tuple[float, ...], in_channels: int, key: str
) -> tuple[float, ...]:
    if values is None:
        values = default if len(default) == in_channels else (sum(default) / len(default),)
    if len(values) == 1:
        return values * in_channels
    if len(values) != in_channels:
        raise ModelLoadError(
            f"sidecar '{key}' has {len(values)} values but the model takes {in_channels} channels"
        )
    return values


_Built = tuple[str, dict[str, Any], int, Task]
"""What a state dict was built as: architecture, its builder's arguments, class count, task."""


def _assemble(
    module: nn.Module,
    *,
    sc: Sidecar,
    source_format: SourceFormat,
    content_hash: str,
    name: str,
    in_channels: int,
    input_size: tuple[int, int] | None = None,
    built: _Built | None = None,
) -> LoadedModel:
    """The :class:`LoadedModel` of a module built from a state dict (``built``) or of a whole module (an
    export or a trusted pickle: the architecture is the sidecar's, the class count and task its output's)."""
    architecture: str | None
    num_classes: int | None
    task: Task | None
    if built is None:
        architecture, num_classes, task = sc.architecture, None, sc.task
        arch_kwargs = dict(sc.arch_kwargs or {})
    else:
        architecture, arch_kwargs, num_classes, task = built
    module.eval()
    size = sc.input_size or input_size or DEFAULT_INPUT_SIZE
    if max(size) > MAX_INPUT_SIDE or min(size) < 1 or not 1 <= in_channels <= MAX_IN_CHANNELS:
        raise ModelLoadError(
            f"the model's input of {in_channels} channels × {size[0]}×{size[1]} is outside the accepted "
            f"range (1 to {MAX_IN_CHANNELS} channels, sides up to {MAX_INPUT_SIDE}); export it smaller"
        )
    _check_finite_weights(module.state_dict(), name)
    rgb = in_channels == 3
    mean = _norm(sc.mean, IMAGENET_MEAN if rgb else GRAY_MEAN, in_channels, "mean")
    std = _norm(sc.std, IMAGENET_STD if rgb else GRAY_STD, in_channels, "std")
    out: torch.Tensor | None = None
    if num_classes is None:  # a whole module: the output tells the class count and the task
        out = _dry_forward(module, probe_input(in_channels, size, mean, std))
        if out.ndim not in (2, 4):
            raise ModelForwardError(
                f"the model returned shape {tuple(out.shape)}; expected (N, classes) or (N, classes, H, W)"
            )
        num_classes = int(out.shape[1])
        task = task or ("segmentation" if out.ndim == 4 else "classification")
    names = sc.class_names or placeholder_class_names(num_classes)
    if len(names) != num_classes:
        raise MissingFieldError(
            f"the sidecar lists {len(names)} class names but the model has {num_classes} outputs",
            field="class_names",
        )
    if sc.garbage_class is not None and sc.garbage_class not in names:
        raise ModelLoadError(
            f"garbage_class '{sc.garbage_class}' is not one of the class names ({_summarise(list(names), 8)})"
        )
    loaded = LoadedModel(
        module=module,
        in_channels=in_channels,
        input_size=size,
        class_names=tuple(names),
        mean=mean,
        std=std,
        source_format=source_format,
        content_hash=content_hash,
        architecture=architecture,
        arch_kwargs=arch_kwargs,
        task=task or "classification",
        garbage_class=sc.garbage_class,
        name=name,
    )
    if out is None:
        check_forward(loaded)
    else:
        _validate_output(out, loaded)
    return loaded


def _first_conv_in_channels(module: nn.Module) -> int | None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return None


def _untrusted(filename: str, contains: str) -> UntrustedFileError:
    return UntrustedFileError(
        f"'{filename}' contains {contains}, so loading it would run code from the file. Nothing was "
        f"executed. {_TRUST_ADVICE}"
    )


def _load_export(
    data: bytes,
    filename: str,
    *,
    trust: bool,
    max_bytes: int,
    max_decoded_bytes: int,
    digest: str,
) -> tuple[nn.Module, int | None, tuple[int, int] | None]:
    # Inspected before torch.export.load runs: it unpickles, evaluates and executes parts of the archive.
    # The same bytes under the same trust and limits give the same answer: a passed inspection is kept.
    inspection = (digest, trust, max_bytes, max_decoded_bytes)
    with _EXPORT_LOCK:
        inspected = inspection in _INSPECTED
    if not inspected:
        problems = untrusted_pt2_problems(
            data, filename, max_bytes=max_bytes, trust=trust, max_decoded_bytes=max_decoded_bytes
        )
        if problems:
            found = describe_problems(problems)
            raise _untrusted(filename, f"parts that torch.export.load would execute ({found})")
        with _EXPORT_LOCK:
            _INSPECTED[inspection] = None
            while len(_INSPECTED) > 64:
                _INSPECTED.popitem(last=False)
    if trust:
        logger.warning("loading torch.export archive '%s' with full trust: its code may run", filename)
    with _EXPORT_LOCK:
        hit = _EXPORT_CACHE.get(digest)
        if hit is not None:
            _EXPORT_CACHE.move_to_end(digest)
            return hit
    _cache_schema_type_hints()
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:
        raise ModelLoadError(
            f"'{filename}' could not be read as a torch.export program: {type(exc).__name__}: "
            f"{str(exc)[:300]}"
        ) from exc
    shape = _user_input_shape(program)
    in_ch = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None
    size = (shape[2], shape[3]) if len(shape) == 4 and all(isinstance(s, int) for s in shape[2:]) else None
    lo, hi = export_batch_limits(shape, program.range_constraints)
    if hi is not None:
        logger.info(
            "'%s' accepts batches of %s rows; batched computations run in chunks of that size",
            filename,
            lo if lo == hi else f"{lo} to {hi}",
        )
    # unflatten restores the original module hierarchy, so forward hooks on named submodules fire.
    try:
        module = torch.export.unflatten(program)
    except Exception as exc:  # a malformed module call graph: torch asserts
        raise ModelLoadError(
            f"'{filename}' holds a torch.export program whose module structure cannot be restored: "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    set_batch_limits(module, lo, hi)
    _remember_export(digest, (module, in_ch, size))
    return module, in_ch, size


# Programs restored from .pt2 files, by content hash: the dashboard and the CLI load the same file again
# (another page, another command of one run) and torch.export.load + unflatten is most of a load. An
# inspection is skipped only when the same bytes passed one under the same trust and limits (a trusted load
# never lets an untrusted one skip it). The module is shared, as one LoadedModel's module is shared between
# threads (verification.cam.concurrency).
EXPORT_CACHE_ENTRIES = 4
EXPORT_CACHE_BYTES = 1 << 30
_EXPORT_CACHE: OrderedDict[str, tuple[nn.Module, int | None, tuple[int, int] | None]] = OrderedDict()
_EXPORT_LOCK = threading.Lock()
_INSPECTED: OrderedDict[tuple[str, bool, int, int], None] = OrderedDict()


def _remember_export(digest: str, entry: tuple[nn.Module, int | None, tuple[int, int] | None]) -> None:
    def nbytes(m: nn.Module) -> int:
        return sum(t.numel() * t.element_size() for t in m.state_dict().values())

    with _EXPORT_LOCK:
        _EXPORT_CACHE[digest] = entry
        _EXPORT_CACHE.move_to_end(digest)
        while len(_EXPORT_CACHE) > 1 and (
            len(_EXPORT_CACHE) > EXPORT_CACHE_ENTRIES
            or sum(nbytes(e[0]) for e in _EXPORT_CACHE.values()) > EXPORT_CACHE_BYTES
        ):
            _EXPORT_CACHE.popitem(last=False)


def clear_export_cache() -> None:
    """Forget the .pt2 programs restored so far (the next load of each reads its file again)."""
    with _EXPORT_LOCK:
        _EXPORT_CACHE.clear()
        _INSPECTED.clear()


class _SchemaTyping:
    """``typing`` for torch's .pt2 deserializer with ``get_type_hints`` memoised per class.

    ``torch._export.serde.serialize._dict_to_dataclass`` calls ``typing.get_type_hints(cls, globalns=...)``
    once per object it builds (about 64,000 for a DenseNet-121 graph), which measured 0.7 of the 1.6 s of
    ``torch.export.load`` on it. The hints of its schema dataclasses never change while the process runs.
    """

    def __init__(self) -> None:
        self._hints: dict[tuple[Any, int, int, bool], dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(typing, name)

    def get_type_hints(
        self, obj: Any, globalns: Any = None, localns: Any = None, include_extras: bool = False
    ) -> dict[str, Any]:
        if not isinstance(obj, type):
            return typing.get_type_hints(obj, globalns, localns, include_extras)
        key = (obj, id(globalns), id(localns), include_extras)
        hints = self._hints.get(key)
        if hints is None:
            hints = typing.get_type_hints(obj, globalns, localns, include_extras)
            self._hints[key] = hints
        return dict(hints)


def _cache_schema_type_hints() -> None:
    try:
        from torch._export.serde import serialize
    except ImportError:  # another torch layout: nothing to speed up
        return
    if getattr(serialize, "typing", None) is typing:  # only the layout this was measured on
        setattr(serialize, "typing", _SchemaTyping())  # noqa: B010 (a module attribute of torch's)


def _user_input_shape(program: Any) -> tuple[Any, ...]:
    """The shape of the program's first user input as exported (ints, or SymInts for dynamic dimensions)."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            val = node.meta.get("val")
            return tuple(val.shape) if val is not None and hasattr(val, "shape") else ()
    return ()


def _unsupported_global(exc: Exception) -> str:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f" (it references {match.group(1)})" if match else ""


def _load_from_bytes(
    data: bytes,
    filename: str,
    *,
    sidecar: Mapping[str, Any] | None,
    architecture: str | None,
    trust: bool,
    name: str | None,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> LoadedModel:
    sc = parse_sidecar(sidecar)
    digest = hashlib.sha256(data).hexdigest()
    name = name or Path(filename).stem or "model"
    fmt = _detect_format(data, filename)
    if fmt == "torchscript":
        raise TorchScriptError(
            f"'{filename}' is a TorchScript file (torch.jit.script or trace). {_TORCHSCRIPT_ADVICE}"
        )
    if fmt == "export":
        module, in_ch, size = _load_export(
            data,
            filename,
            trust=trust,
            max_bytes=max_bytes,
            max_decoded_bytes=max_decoded_bytes,
            digest=digest,
        )
        in_channels = sc.in_channels or in_ch or _first_conv_in_channels(module) or 3
        return _assemble(
            module, sc=sc, source_format="export", content_hash=digest, name=name, in_channels=in_channels,
            input_size=size,
        )  # fmt: skip
    source: SourceFormat
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        _check_safetensors_decoded(data, filename, max_decoded_bytes)
        try:
            obj: Any = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"'{filename}' is not a valid safetensors file (corrupt or truncated): {exc}"
            ) from exc
        source = "safetensors"
    else:
        if data[:4] == b"PK\x03\x04":  # before torch.load, which inflates and allocates every record
            _check_torch_zip(data, filename, max_bytes, max_decoded_bytes)
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            source = "state_dict"
        except pickle.UnpicklingError as exc:
            if not trust:
                raise _untrusted(filename, f"pickled Python objects{_unsupported_global(exc)}") from exc
            logger.warning("unpickling '%s' with full trust: code in the file may run", filename)
            try:
                obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
            except Exception as exc2:
                raise ModelLoadError(f"'{filename}' could not be unpickled: {exc2}") from exc2
            source = "pickle"
        except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
            raise ModelLoadError(
                f"'{filename}' is not a readable PyTorch file (corrupt or truncated): {exc}"
            ) from exc
    weights = _as_state_dict(obj, filename)
    if not isinstance(weights, nn.Module):  # before the fp16 upcast and the build: both would allocate
        check_model_decoded(
            decoded_weight_bytes(
                (t.numel(), t.element_size(), t.is_floating_point()) for t in weights.values()
            ),
            f"'{filename}'",
            ModelLimits(max_decoded_bytes=max_decoded_bytes),
        )
    if isinstance(weights, nn.Module):
        module = weights.float()
        in_channels = sc.in_channels or _first_conv_in_channels(module) or 3
        return _assemble(
            module, sc=sc, source_format="pickle", content_hash=digest, name=name, in_channels=in_channels
        )
    module, arch, kwargs, in_channels, num_classes, task = _module_from_state_dict(
        weights, sc, architecture, filename
    )
    return _assemble(
        module, sc=sc, source_format=source, content_hash=digest, name=name, in_channels=in_channels,
        built=(arch, kwargs, num_classes, task),
    )  # fmt: skip


MAX_TORCH_ZIP_ENTRIES = 20_000


def _check_torch_zip(data: bytes, filename: str, max_bytes: int, max_decoded_bytes: int) -> None:
    """A torch.save zip's entries checked before ``torch.load`` reads them. Its reader allocates every record
    at its declared uncompressed size and inflates a compressed one in full (a 973 KB deflated file made it
    allocate 955 MiB), so the declared sizes are what bounds it: the archive checks of
    :func:`verification.io.archive.check_entries` (entry count, names, compression ratio, all entries
    against the file budget ``max_bytes``), then the tensor records (``<root>/data/<key>``) charged at their
    declared size against ``max_decoded_bytes``. ``torch.save`` writes every entry stored, so a record is at
    most what the weights decode to (an fp16 record is half of it)."""
    what = f"'{filename}'"
    with open_zip(data, what, ModelLoadError) as zf:
        infos = check_entries(zf, what, ZipLimits(MAX_TORCH_ZIP_ENTRIES, max_bytes, 200), ModelLoadError)
    records = sum(i.file_size for i in infos if i.filename.split("/")[1:2] == ["data"])
    if records > max_decoded_bytes:
        raise InputTooLargeError(
            f"{what} declares tensor data of {records / (1 << 20):,.0f} MiB, above the "
            f"{max_decoded_bytes / (1 << 20):,.0f} MiB limit for one model's weights; refused before loading"
        )


_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8,
}  # fmt: skip


def _check_safetensors_decoded(data: bytes, filename: str, max_decoded_bytes: int) -> None:
    """The decoded size of a safetensors file from its header (dtype and shape of every tensor), before any
    tensor is made. A header that cannot be read is left to the safetensors loader to refuse."""
    header_len = int.from_bytes(data[:8], "little")
    try:  # bounded: a hostile header (deep nesting, huge numbers) is left to safetensors to refuse
        header = loads_bounded(
            data[8 : 8 + header_len], f"'{filename}'", error=ModelLoadError, max_bytes=100 << 20, max_depth=8
        )
    except VerificationError:
        return
    if not isinstance(header, dict):
        return
    entries = []
    for key, meta in header.items():
        if key == "__metadata__" or not isinstance(meta, dict):
            continue
        shape, dtype = meta.get("shape"), meta.get("dtype")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            return
        numel = math.prod(shape)
        floating = str(dtype).startswith(("F", "BF"))
        entries.append((numel, _SAFETENSORS_DTYPE_BYTES.get(str(dtype), 8), floating))
    check_model_decoded(
        decoded_weight_bytes(entries), f"'{filename}'", ModelLimits(max_decoded_bytes=max_decoded_bytes)
    )


def _too_large(n_bytes: int, max_bytes: int, what: str) -> str:
    return (
        f"{what} is {n_bytes / 1e6:.1f} MB, above the {max_bytes / 1e6:.0f} MB limit; raise max_bytes if "
        "you trust it, or use a smaller model"
    )


def _check_size(n_bytes: int, max_bytes: int, what: str) -> None:
    if n_bytes > max_bytes:
        raise InputTooLargeError(_too_large(n_bytes, max_bytes, what))


def load_model(
    path: str | Path,
    *,
    sidecar: str | Path | None = None,
    architecture: str | None = None,
    trust: bool = False,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> LoadedModel:
    """Load a model file (.safetensors, state-dict .pt/.pth, torch.export .pt2; pickles only with ``trust``).

    The sidecar defaults to ``<stem>.json`` beside the file; ``architecture`` overrides the sidecar's.
    ``max_bytes`` bounds the file, ``max_decoded_bytes`` the float32 weights it decodes to (checked from the
    file's declarations before the module is built; :class:`verification.io.budget.ModelLimits`).
    """
    path = Path(path)
    data = read_regular_file(
        path,
        kind="model file",
        advice="give the path of the weights file (.safetensors, .pt/.pth or .pt2)",
        max_bytes=max_bytes,
        too_large=lambda size: _too_large(size, max_bytes, f"model file '{path.name}'"),
        error=ModelLoadError,
    )
    sidecar_path = Path(sidecar) if sidecar is not None else path.with_suffix(".json")
    raw = read_sidecar_file(sidecar_path) if sidecar is not None or sidecar_path.is_file() else None
    return _load_from_bytes(
        data,
        path.name,
        sidecar=raw,
        architecture=architecture,
        trust=trust,
        name=name,
        max_bytes=max_bytes,
        max_decoded_bytes=max_decoded_bytes,
    )


def load_model_bytes(
    data: bytes,
    filename: str,
    *,
    sidecar_json: Mapping[str, Any] | None = None,
    architecture: str | None = None,
    trust: bool = False,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> LoadedModel:
    """Load an uploaded model file from memory; same formats and rules as :func:`load_model`."""
    _check_size(len(data), max_bytes, f"uploaded model '{filename}'")
    return _load_from_bytes(
        bytes(data),
        filename,
        sidecar=sidecar_json,
        architecture=architecture,
        trust=trust,
        name=name,
        max_bytes=max_bytes,
        max_decoded_bytes=max_decoded_bytes,
    )


def save_model(
    module: nn.Module,
    path: str | Path,
    *,
    architecture: str,
    arch_kwargs: Mapping[str, Any] | None = None,
    class_names: Sequence[str],
    in_channels: int,
    input_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    task: Task = "classification",
    garbage_class: str | None = None,
    half: bool = False,
) -> Path:
    """Write ``<path>.safetensors`` and the sidecar ``<stem>.json``; ``half`` stores float weights as fp16.

    Returns the weights path; the sidecar is ``path.with_suffix(".json")``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_model writes .safetensors files, got '{path.name}'")
    if garbage_class is not None and garbage_class not in class_names:
        raise ValueError(f"garbage_class '{garbage_class}' is not one of {list(class_names)}")
    tensors = {}
    for key, value in module.state_dict().items():
        t = value.detach().cpu()
        if half and t.is_floating_point():
            t = t.half()
        tensors[key] = t.contiguous().clone()  # clone: safetensors refuses tensors that share storage
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    sidecar = {
        "architecture": architecture,
        "arch_kwargs": dict(arch_kwargs or {}),
        "in_channels": in_channels,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "input_size": list(input_size),
        "mean": list(mean),
        "std": list(std),
        "task": task,
        "garbage_class": garbage_class,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return path
