"""Model size limits by what the weights decode to (verification/io/budget.py ModelLimits), and the .pt2
content cache."""

from __future__ import annotations

import io
import math

import pytest
import torch
from safetensors.torch import save
from torch import nn

from verification.errors import InputTooLargeError
from verification.io.architectures import build_architecture
from verification.io.budget import (
    DEFAULT_MODEL_LIMITS,
    ModelLimits,
    check_model_decoded,
    decoded_weight_bytes,
)
from verification.io.models import DEFAULT_MAX_MODEL_BYTES, clear_export_cache, load_model_bytes

MB = 1_000_000


def _float32_bytes(arch: str) -> int:
    with torch.device("meta"):
        module = build_architecture(arch, num_classes=1000, in_channels=3)
    return sum(t.numel() * 4 for t in module.state_dict().values() if t.is_floating_point())


def test_field_models_fit_the_defaults_and_huge_ones_do_not() -> None:
    vgg = _float32_bytes("vgg16_bn")
    assert 550 * MB < vgg < 556 * MB  # the stock vgg16_bn state dict the user could not load (553 MB)
    assert vgg > 524 * MB  # ... above the old 500 MiB file limit
    check_model_decoded(vgg, "vgg16_bn")
    check_model_decoded(_float32_bytes("convnext_base"), "convnext_base")
    assert vgg + 16 * MB < DEFAULT_MAX_MODEL_BYTES  # its file (weights + pickle) is accepted too
    with pytest.raises(InputTooLargeError, match="once decoded"):
        check_model_decoded(2_530 * MB, "vit_h_14")  # ViT-H/14: 632M parameters


def test_decoded_bytes_by_hand() -> None:
    # fp16 weights decode to float32 (4 bytes), an int64 counter stays 8 bytes
    assert decoded_weight_bytes([(10, 2, True), (1, 8, False), (3, 4, True)]) == 40 + 8 + 12
    with pytest.raises(ValueError, match="positive"):
        ModelLimits(max_decoded_bytes=0)
    assert DEFAULT_MODEL_LIMITS.max_file_bytes > DEFAULT_MODEL_LIMITS.max_decoded_bytes


def _fp16_safetensors() -> tuple[bytes, dict[str, object], int]:
    module = build_architecture("resnet18", num_classes=3, in_channels=1)
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}
    decoded = sum(v.numel() * (4 if v.is_floating_point() else v.element_size()) for v in sd.values())
    side = {"architecture": "resnet18", "in_channels": 1, "num_classes": 3, "input_size": [32, 32]}
    return save(sd), side, decoded


def test_fp16_safetensors_is_charged_as_float32() -> None:
    data, side, decoded = _fp16_safetensors()
    assert len(data) < decoded < 2 * len(data) + 4096
    # a limit between the file size and what it decodes to: the file passes, the decoded size does not
    limit = (len(data) + decoded) // 2
    with pytest.raises(InputTooLargeError, match="once decoded to float32"):
        load_model_bytes(data, "half.safetensors", sidecar_json=side, max_decoded_bytes=limit)
    loaded = load_model_bytes(data, "half.safetensors", sidecar_json=side, max_decoded_bytes=decoded)
    assert loaded.num_classes == 3


def test_state_dict_checked_before_the_build() -> None:
    _data, side, decoded = _fp16_safetensors()
    sd = {
        k: v.float()
        for k, v in build_architecture("resnet18", num_classes=3, in_channels=1).state_dict().items()
    }
    buf = io.BytesIO()
    torch.save(sd, buf)
    # the zip's declared tensor records alone are over the limit: refused before torch.load reads them
    with pytest.raises(InputTooLargeError, match=r"declares tensor data .* refused before loading"):
        load_model_bytes(buf.getvalue(), "m.pt", sidecar_json=side, max_decoded_bytes=decoded // 2)
    # fp16 records under the limit that decode to float32 over it: refused once decoded, before the build
    half = io.BytesIO()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, half)
    records = sum(v.numel() * (2 if v.is_floating_point() else v.element_size()) for v in sd.values())
    with pytest.raises(InputTooLargeError, match="once decoded"):
        load_model_bytes(half.getvalue(), "m.pt", sidecar_json=side, max_decoded_bytes=records + 1024)


def test_pt2_declared_weights_against_the_decoded_limit() -> None:
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    buf = io.BytesIO()
    torch.export.save(torch.export.export(net.eval(), (torch.randn(1, 1, 16, 16),)), buf)
    declared = sum(p.numel() * 4 for p in net.parameters())
    side = {"input_size": [16, 16]}
    with pytest.raises(InputTooLargeError, match="declares weights and constants"):
        load_model_bytes(buf.getvalue(), "m.pt2", sidecar_json=side, max_decoded_bytes=declared - 1)
    assert (
        load_model_bytes(buf.getvalue(), "m.pt2", sidecar_json=side, max_decoded_bytes=declared).fixed_batch
        == 1
    )


def test_pt2_content_cache_shares_the_restored_program() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    buf = io.BytesIO()
    torch.export.save(torch.export.export(net.eval(), (torch.randn(1, 1, 16, 16),)), buf)
    clear_export_cache()
    a = load_model_bytes(buf.getvalue(), "a.pt2", sidecar_json={"input_size": [16, 16]})
    b = load_model_bytes(
        buf.getvalue(), "b.pt2", sidecar_json={"input_size": [16, 16], "class_names": ["x", "y"]}
    )
    assert a.module is b.module  # restored once
    assert b.class_names == ("x", "y")  # the sidecar still applies per load
    assert a.content_hash == b.content_hash
    clear_export_cache()
    c = load_model_bytes(buf.getvalue(), "c.pt2", sidecar_json={"input_size": [16, 16]})
    assert c.module is not a.module
    with torch.no_grad():
        assert math.isfinite(float(c.module(torch.zeros(1, 1, 16, 16)).sum()))


def test_trusted_load_does_not_let_an_untrusted_one_skip_the_inspection() -> None:
    import zipfile

    from verification.errors import UntrustedFileError

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    buf = io.BytesIO()
    torch.export.save(torch.export.export(net.eval(), (torch.randn(1, 1, 16, 16),)), buf)
    out = io.BytesIO()  # the archive plus an entry torch.export.save never writes
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(out, "w") as dst:
        root = src.namelist()[0].split("/", 1)[0]
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        dst.writestr(f"{root}/data/unexpected.bin", b"x")
    data, side = out.getvalue(), {"input_size": [16, 16]}
    clear_export_cache()
    with pytest.raises(UntrustedFileError):
        load_model_bytes(data, "x.pt2", sidecar_json=side)
    assert load_model_bytes(data, "x.pt2", sidecar_json=side, trust=True).fixed_batch == 1
    with pytest.raises(UntrustedFileError):  # the program is cached now; the untrusted load is still refused
        load_model_bytes(data, "x.pt2", sidecar_json=side)
    clear_export_cache()
