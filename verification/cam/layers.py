"""Layer discovery: which modules produce spatial (N, C, H, W) maps, and the default target layers.

One dry forward (batch 1, zeros, eval mode, no grad) with a forward hook on every module records each module's
output shape in the order the calls complete; hooks are removed and training flags restored in ``finally``.
Results are cached per model object and input shape (weakly, so the cache never keeps a model alive).
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from verification.cam.chunking import batch_limits
from verification.cam.concurrency import exclusive, this_thread_only
from verification.cam.modules import as_module
from verification.errors import LayerError, ModelForwardError, ShapeError


@dataclass(frozen=True)
class LayerInfo:
    """A module by dotted ``named_modules()`` name, its class name, its output shape for batch 1 and how many
    times it ran in one forward (> 1: a reused module, whose last call is the one a CAM uses)."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    calls: int = 1
    input_shape: tuple[int, ...] | None = None

    @property
    def spatial(self) -> bool:
        s = self.output_shape
        return s is not None and len(s) == 4 and s[2] * s[3] > 1


@dataclass(frozen=True)
class LayerScan:
    """``layers`` in ``named_modules()`` order; ``order`` the names in the order their calls completed;
    ``output_shape`` the model's prediction tensor shape."""

    layers: tuple[LayerInfo, ...]
    order: tuple[str, ...]
    output_shape: tuple[int, ...]
    input_shape: tuple[int, ...] = ()

    def info(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise LayerError(unknown_layer_message(name, [layer.name for layer in self.layers]))


@contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Put every module in eval mode for the block and restore each module's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        if enabled:
            model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def first_tensor(output: Any) -> Tensor | None:
    """The tensor a layer's output stands for: itself, or the first tensor of a tuple/list."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                return item
    return None


def replace_first_tensor(output: Any, new: Tensor) -> Any:
    """``output`` with :func:`first_tensor`'s tensor replaced by ``new`` (what a forward hook returns to
    change a layer's output; a tuple stays a tuple of its own type, a list a list)."""
    if isinstance(output, Tensor):
        return new
    items = list(output)
    for i, item in enumerate(items):
        if isinstance(item, Tensor):
            items[i] = new
            break
    if isinstance(output, tuple):
        return type(output)(*items) if hasattr(output, "_fields") else tuple(items)
    return items


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, (p.dtype if p.is_floating_point() else torch.float32)
    for b in model.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.float32


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], LayerScan]] = weakref.WeakKeyDictionary()


def _structure_key(model: nn.Module) -> tuple[int, ...]:
    return tuple(id(m) for m in model.modules())


@exclusive
def scan_layers(model: nn.Module, input_shape: Sequence[int]) -> LayerScan:
    """Run the dry forward (or reuse a cached one) and describe every module's output."""
    from verification.cam.targets import output_tensor

    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3:
        raise ShapeError(f"input_shape must be (C, H, W) or (N, C, H, W); got {tuple(input_shape)}")
    device, dtype = model_device_dtype(model)
    key = (shape, str(device), str(dtype), _structure_key(model))
    try:
        cached = _CACHE.get(model, {}).get(key)
    except TypeError:  # an unhashable module type cannot be a weak key; scan every time
        cached = None
    if cached is not None:
        return cached

    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False) if n}
    rows = batch_limits(model)[0]  # 1, or the batch a torch.export program fixes (shapes shown for 1)
    seen: dict[str, tuple[str, tuple[int, ...] | None, int, tuple[int, ...] | None]] = {}
    order: list[str] = []
    handles = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            t = first_tensor(output)
            shp = _batch_one(t.shape, rows) if t is not None else None
            i = first_tensor(args)
            ishp = _batch_one(i.shape, rows) if i is not None else None
            calls = seen[name][2] + 1 if name in seen else 1
            seen[name] = (type(module).__name__, shp, calls, ishp)
            order.append(name)

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(this_thread_only(make_hook(name))))
        with eval_mode(model), torch.no_grad():
            try:
                out = model(torch.zeros((rows, *shape), device=device, dtype=dtype))
            except Exception as exc:
                raise ModelForwardError(
                    f"the model failed on an input of shape (1, {', '.join(map(str, shape))}): {exc}"
                ) from exc
    finally:
        for h in handles:
            h.remove()
    pred = output_tensor(out)
    layers = []
    for name, module in model.named_modules():
        if not name:
            continue
        if name in seen:
            typ, shp, calls, ishp = seen[name]
            layers.append(LayerInfo(name, typ, shp, calls, ishp))
        else:
            layers.append(LayerInfo(name, type(module).__name__, None, 0))
    del names
    # keep the last completion of each name (reused modules complete several times)
    last: dict[str, int] = {n: i for i, n in enumerate(order)}
    scan = LayerScan(
        tuple(layers),
        tuple(sorted(last, key=last.__getitem__)),
        _batch_one(pred.shape, rows),
        (1, *shape),
    )
    with suppress(TypeError):  # an unhashable module type cannot be a weak key
        _CACHE.setdefault(model, {})[key] = scan
    return scan


def _batch_one(shape: Sequence[int], rows: int) -> tuple[int, ...]:
    """A shape of the dry run with its batch of ``rows`` written as 1."""
    out = tuple(int(s) for s in shape)
    return (1, *out[1:]) if rows > 1 and out and out[0] == rows else out


def list_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerInfo]:
    """Every named module with its output shape for batch 1 (None when it did not run in the forward)."""
    return list(scan_layers(as_module(model), input_shape).layers)


def is_spatial_map(shape: Sequence[int] | None, input_hw: Sequence[int]) -> bool:
    """Whether an output shape reads as an (N, C, h, w) map of the input: 4-D, more than one position, and
    the same downsampling factor along both axes within a factor 2. The last test rejects channels-last
    tensors inside blocks (ConvNeXt's (N, h, w, C) after its Permute), whose "w" is the channel count."""
    if shape is None or len(shape) != 4 or shape[2] * shape[3] <= 1:
        return False
    sh, sw = input_hw[0] / shape[2], input_hw[1] / shape[3]
    return max(sh, sw) / min(sh, sw) <= 2.0


_NOT_BLOCKS = ("Dropout", "AdaptiveAvgPool", "AdaptiveMaxPool", "Identity")


def spatial_candidates(scan: LayerScan) -> list[str]:
    """Spatial layers in completion order, without the ones that produce the prediction itself (a
    segmentation head and the containers ending in it), nor dropout / identity (they repeat their input) or
    adaptive pooling (it resamples to a fixed grid: vgg's avgpool turns a 4×4 map into 7×7)."""
    infos = {layer.name: layer for layer in scan.layers}
    out = []
    seg = len(scan.output_shape) == 4
    for name in scan.order:
        info = infos[name]
        if not is_spatial_map(info.output_shape, scan.input_shape[2:]) or info.type.startswith(_NOT_BLOCKS):
            continue
        if seg and info.output_shape is not None and info.output_shape[1] == scan.output_shape[1]:
            continue
        out.append(name)
    return out


def default_target_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    """The last module whose output is a 4-D map with more than one spatial position.

    Hooks complete inner-first, so for a container that ends a stage the container's own name wins:
    resnet → ``layer4``, densenet → ``features`` (the same tensor as ``features.norm5``; the ReLU after it is
    functional, so no module exposes a later map), vgg → ``features`` (its last max-pool output, 7×7 at 224),
    efficientnet / mobilenet / convnext → ``features``. For a segmentation model (4-D output) the layers that
    emit the class logits (output channels = number of classes) are skipped,
    which leaves the last decoder block.
    """
    scan = scan_layers(as_module(model), input_shape)
    cands = spatial_candidates(scan)
    if not cands:
        raise LayerError(
            "the model has no module with a spatial (N, C, H, W) output larger than 1×1 for input "
            f"{tuple(input_shape)}; CAMs need a convolutional layer"
        )
    return cands[-1]


def stage_outputs(model: nn.Module, input_shape: Sequence[int], count: int = 3) -> list[str]:
    """The outputs of the last ``count`` stages, a stage being a run of spatial layers at one resolution:
    for each resolution, the last module to complete before the resolution drops (resnet: layer2..layer4;
    densenet: denseblock2, denseblock3, features). A module inside a block that changes resolution (the
    expand conv of a strided MBConv, resnet's ``layer2.0.conv1``) is partial work of the next stage, not the
    output of its own, and is skipped."""
    scan = scan_layers(as_module(model), input_shape)
    infos = {layer.name: layer for layer in scan.layers}

    def grid(shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        return tuple(shape[2:]) if shape is not None and len(shape) == 4 else None

    def partial(name: str) -> bool:
        own = grid(infos[name].output_shape)
        parts = name.split(".")
        for i in range(1, len(parts)):
            anc = infos.get(".".join(parts[:i]))
            if anc is not None and grid(anc.input_shape) == own and grid(anc.output_shape) != own:
                return True
        return False

    cands = [n for n in spatial_candidates(scan) if not partial(n)]
    stages: list[str] = []
    last_hw: tuple[int, int] | None = None
    for name in cands:
        shp = infos[name].output_shape
        assert shp is not None
        hw = (shp[2], shp[3])
        if hw == last_hw and stages:
            stages[-1] = name
        else:
            stages.append(name)
            last_hw = hw
    # one entry per resolution: a later layer at a resolution already seen (decoder) replaces the earlier
    by_hw: dict[tuple[int, int], str] = {}
    for name in stages:
        shp = infos[name].output_shape
        assert shp is not None
        by_hw.pop((shp[2], shp[3]), None)
        by_hw[(shp[2], shp[3])] = name
    result = list(by_hw.values())
    return result[-count:]


def unknown_layer_message(name: str, names: Sequence[str]) -> str:
    near = difflib.get_close_matches(name, list(names), n=8, cutoff=0.5)
    if not near:
        prefix = name.rsplit(".", 1)[0]
        near = [n for n in names if n.startswith(prefix)][:8] or list(names)[-8:]
    return f"the model has no layer named {name!r}; nearby names: {', '.join(near)}"


def resolve_layer_names(model: nn.Module, layers: Sequence[str] | str) -> list[str]:
    """Check that each name is a module of ``model`` (LayerError with nearby names otherwise)."""
    if isinstance(layers, str):
        layers = [layers]
    names = [n for n, _ in model.named_modules()]
    known = set(names)
    for layer in layers:
        if layer not in known:
            raise LayerError(unknown_layer_message(layer, [n for n in names if n]))
    return list(dict.fromkeys(layers))
