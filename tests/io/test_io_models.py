"""Model loading: every format path with files made here, the refusals, and each bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tests.builders import loaded_model
from verification.errors import (
    InputTooLargeError,
    ModelForwardError,
    ModelLoadError,
    TorchScriptError,
    UntrustedFileError,
)
from verification.io.models import build_architecture, check_forward, load_model, load_model_bytes, save_model
from verification.io.records import LoadedModel

SIZE = (64, 64)
CLASSES = ["normal", "nodule", "garbage"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_outputs(a: nn.Module, b: nn.Module, shape: tuple[int, ...] = (2, 1, *SIZE)) -> bool:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_architecture("resnet18", num_classes=3, in_channels=1)


class TinyNet(nn.Module):
    """A small CNN with named stages, for export and forward-failure tests."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 8, 3, padding=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(torch.relu(self.features(x))).flatten(1))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


# --- safetensors / state dict -----------------------------------------------------------------------------


def test_safetensors_with_sidecar_round_trip(tmp_path: Path, resnet: nn.Module) -> None:
    path = save_model(
        resnet,
        tmp_path / "cxr.safetensors",
        architecture="resnet18",
        class_names=CLASSES,
        in_channels=1,
        input_size=SIZE,
        mean=[0.5],
        std=[0.25],
        garbage_class="garbage",
    )
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["architecture"] == "resnet18"
    assert sidecar["num_classes"] == 3
    loaded = load_model(path)
    assert isinstance(loaded, LoadedModel)
    assert loaded.source_format == "safetensors"
    assert loaded.content_hash == _sha256(path)
    assert (loaded.in_channels, loaded.input_size, loaded.num_classes) == (1, SIZE, 3)
    assert loaded.class_names == tuple(CLASSES)
    assert (loaded.mean, loaded.std) == ((0.5,), (0.25,))
    assert loaded.garbage_index == 2
    assert loaded.architecture == "resnet18"
    assert loaded.task == "classification"
    assert loaded.name == "cxr"
    assert not loaded.module.training
    assert _same_outputs(loaded.module, resnet)


def test_class_count_and_channels_inferred_from_weights(tmp_path: Path, resnet: nn.Module) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"architecture": "resnet18", "input_size": [64, 64]}))
    loaded = load_model(path)
    assert (loaded.in_channels, loaded.num_classes) == (1, 3)
    assert loaded.class_names == ("class_0", "class_1", "class_2")
    assert (loaded.class_name(2), loaded.class_name(3), loaded.class_name(-1)) == ("class_2", "3", "-1")
    # one-channel default normalisation is the mean of the ImageNet statistics
    assert loaded.mean == pytest.approx((0.449,))
    assert _same_outputs(loaded.module, resnet)


def test_state_dict_pt_with_architecture_argument(tmp_path: Path, resnet: nn.Module) -> None:
    path = tmp_path / "w.pt"
    # a training checkpoint: the state dict under "state_dict", saved from DataParallel ("module." prefix)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in resnet.state_dict().items()}}, path)
    loaded = load_model(path, architecture="resnet18")
    assert loaded.source_format == "state_dict"
    assert loaded.content_hash == _sha256(path)
    assert loaded.input_size == (224, 224)
    assert _same_outputs(loaded.module, resnet)


def test_explicit_sidecar_path_and_bytes_upload(tmp_path: Path, resnet: nn.Module) -> None:
    weights = tmp_path / "code.pth"  # an archive root named "code" must not look like TorchScript
    torch.save(resnet.state_dict(), weights)
    side = tmp_path / "other_name.json"
    side.write_text(json.dumps({"architecture": "resnet18", "class_names": CLASSES, "input_size": [64, 64]}))
    from_path = load_model(weights, sidecar=side)
    from_bytes = load_model_bytes(weights.read_bytes(), "code.pth", sidecar_json=json.loads(side.read_text()))
    assert from_path.content_hash == from_bytes.content_hash == _sha256(weights)
    assert from_path.class_names == from_bytes.class_names == tuple(CLASSES)
    assert _same_outputs(from_bytes.module, resnet)


def test_fp16_weights_are_upcast(tmp_path: Path) -> None:
    model = build_architecture("mobilenet_v3_small", num_classes=2, in_channels=1)
    path = save_model(
        model,
        tmp_path / "half.safetensors",
        architecture="mobilenet_v3_small",
        class_names=["a", "b"],
        in_channels=1,
        input_size=SIZE,
        mean=[0.5],
        std=[0.25],
        half=True,
    )
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("classifier.3.weight").dtype == torch.float16
    loaded = load_model(path)
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
    # the loaded weights are the fp16-rounded originals, exactly
    rounded = {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    for key, value in loaded.module.state_dict().items():
        assert torch.equal(value, rounded[key]), key


def test_segmentation_unet_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_architecture("unet", num_classes=2, in_channels=1, base=4)
    path = save_model(
        model,
        tmp_path / "seg.safetensors",
        architecture="unet",
        arch_kwargs={"base": 4},
        class_names=["background", "lesion"],
        in_channels=1,
        input_size=(32, 32),
        mean=[0.5],
        std=[0.25],
        task="segmentation",
    )
    loaded = load_model(path)
    assert loaded.task == "segmentation"
    assert loaded.arch_kwargs == {"base": 4}
    assert _same_outputs(loaded.module, model, (1, 1, 32, 32))


@pytest.mark.slow
def test_timm_state_dict(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    model = build_architecture("timm/mobilenetv3_small_050", num_classes=3, in_channels=1)
    path = tmp_path / "t.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_model(path, architecture="timm/mobilenetv3_small_050")
    assert (loaded.in_channels, loaded.num_classes) == (1, 3)
    assert _same_outputs(loaded.module, model, (1, 1, 64, 64))


# --- torch.export -------------------------------------------------------------------------------------------


def test_export_program_loads_and_hooks_fire(tmp_path: Path) -> None:
    model = _tiny()
    x = torch.randn(2, 1, 32, 32)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "tiny.pt2"
    torch.export.save(program, path)
    path.with_suffix(".json").write_text(json.dumps({"class_names": ["a", "b"]}))
    loaded = load_model(path)
    assert loaded.source_format == "export"
    assert (loaded.in_channels, loaded.input_size, loaded.class_names) == (1, (32, 32), ("a", "b"))
    assert loaded.content_hash == _sha256(path)
    names = dict(loaded.module.named_modules())
    assert {"features", "features.2", "features.3", "classifier"} <= set(names)
    captured: list[torch.Tensor] = []
    handle = names["features.3"].register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        inp = torch.randn(3, 1, 32, 32, requires_grad=True)
        out = loaded.module(inp)
    finally:
        handle.remove()
    assert len(captured) == 1
    assert tuple(captured[0].shape) == (3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(out, model(inp), atol=1e-5)
    # gradients flow back to the captured activation, which Grad-CAM needs
    (grad,) = torch.autograd.grad(out[:, 0].sum(), captured[0])
    assert grad.abs().sum() > 0


def test_export_with_wrong_sidecar_input_size_fails_forward(tmp_path: Path) -> None:
    program = torch.export.export(_tiny(), (torch.randn(1, 1, 16, 16),))
    path = tmp_path / "static.pt2"
    torch.export.save(program, path)
    path.with_suffix(".json").write_text(json.dumps({"input_size": [40, 40]}))
    with pytest.raises(ModelForwardError, match=r"test input of shape \(1, 1, 40, 40\)"):
        load_model(path)


# --- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_is_refused_with_advice(tmp_path: Path, how: str) -> None:
    model = _tiny()
    scripted = (
        torch.jit.trace(model, torch.randn(1, 1, 16, 16)) if how == "trace" else torch.jit.script(model)
    )
    path = tmp_path / f"{how}.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(TorchScriptError, match=r"torch\.export") as info:
        load_model(path, trust=True)
    assert "state_dict" in str(info.value)
    with pytest.raises(TorchScriptError):
        load_model_bytes(path.read_bytes(), "upload.pt")


class _MarkerPayload:
    """Unpickles by evaluating code that writes a marker file and returns a real module."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        code = (
            f"__import__('pathlib').Path({str(self.marker)!r}).write_text('executed') and None or "
            "__import__('torch').nn.Sequential(__import__('torch').nn.Conv2d(1, 2, 3), "
            "__import__('torch').nn.AdaptiveAvgPool2d(1), __import__('torch').nn.Flatten())"
        )
        return (eval, (code,))


@pytest.mark.parametrize("zipped", [True, False])
def test_pickle_runs_nothing_without_trust_and_runs_with_it(tmp_path: Path, zipped: bool) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    torch.save(_MarkerPayload(marker), path, _use_new_zipfile_serialization=zipped)
    assert not marker.exists()
    with pytest.raises(UntrustedFileError, match="Nothing was executed"):
        load_model(path)
    with pytest.raises(UntrustedFileError):
        load_model_bytes(path.read_bytes(), "evil.pt")
    assert not marker.exists()
    loaded = load_model(path, trust=True)
    assert marker.read_text() == "executed"
    assert loaded.source_format == "pickle"
    assert (loaded.in_channels, loaded.num_classes) == (1, 2)


def test_whole_module_pickle_needs_trust(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(UntrustedFileError, match=r"torch\.nn\.modules\.container\.Sequential"):
        load_model(path)
    loaded = load_model(path, trust=True, name="mine")
    assert (loaded.num_classes, loaded.in_channels, loaded.name) == (4, 1, "mine")
    assert _same_outputs(loaded.module, model)


# --- bad inputs ---------------------------------------------------------------------------------------------


def test_weights_of_another_architecture(tmp_path: Path, resnet: nn.Module) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(path))
    with pytest.raises(
        ModelLoadError, match=r"do not fit architecture 'resnet34'.*missing keys \(layer1\.2\."
    ):
        load_model(path, architecture="resnet34")
    with pytest.raises(ModelLoadError, match=r"missing keys \(features\.0\.0\.weight.*unexpected keys \(bn1"):
        load_model(path, architecture="mobilenet_v3_small")


def test_sidecar_contradicting_weights(tmp_path: Path, resnet: nn.Module) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(path))
    bad = {"architecture": "resnet18", "class_names": ["a", "b"]}
    with pytest.raises(ModelLoadError, match="num_classes=2 but the weights have 3"):
        load_model_bytes(path.read_bytes(), "w.safetensors", sidecar_json=bad)
    bad = {"architecture": "resnet18", "class_names": ["a", "b", "c"], "garbage_class": "junk"}
    with pytest.raises(ModelLoadError, match="garbage_class 'junk'"):
        load_model_bytes(path.read_bytes(), "w.safetensors", sidecar_json=bad)
    with pytest.raises(ModelLoadError, match="name the architecture"):
        load_model_bytes(path.read_bytes(), "w.safetensors")


def test_forward_that_raises(tmp_path: Path) -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    loaded = loaded_model(Broken(), input_size=(8, 8), class_names=("a",), mean=(0.5,), std=(0.25,))
    with pytest.raises(ModelForwardError, match=r"raised RuntimeError.*boom"):
        check_forward(loaded)
    # a 5-level U-Net pools a 16×16 input down to nothing: load_model's dry run reports it
    path = tmp_path / "w.pth"
    torch.save(build_architecture("unet", num_classes=2, in_channels=1, base=2, depth=5).state_dict(), path)
    sidecar = {"architecture": "unet", "arch_kwargs": {"base": 2, "depth": 5}, "input_size": [16, 16]}
    with pytest.raises(ModelForwardError, match=r"\(1, 1, 16, 16\)"):
        load_model_bytes(path.read_bytes(), "w.pth", sidecar_json=sidecar)


def test_oversize_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(1000)}, str(path))
    with pytest.raises(InputTooLargeError, match="limit"):
        load_model(path, max_bytes=1000)
    with pytest.raises(InputTooLargeError):
        load_model_bytes(path.read_bytes(), "big.safetensors", max_bytes=1000)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b"this is a text file, renamed"), "not a recognised model file"),
        (lambda p: p.write_bytes(b""), "not a recognised model file"),
    ],
)
def test_non_model_files(tmp_path: Path, make: object, match: str) -> None:
    path = tmp_path / "m.pt"
    make(path)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=match):
        load_model(path)


def test_truncated_files(tmp_path: Path, resnet: nn.Module) -> None:
    sd = {k: v.contiguous() for k, v in _tiny().state_dict().items()}
    st = tmp_path / "w.safetensors"
    save_file(sd, str(st))
    pt = tmp_path / "w.pt"
    torch.save(sd, pt)
    for path in (st, pt):
        data = path.read_bytes()
        with pytest.raises(ModelLoadError, match="corrupt or truncated"):
            load_model_bytes(data[: len(data) // 2], path.name, architecture="resnet18")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
