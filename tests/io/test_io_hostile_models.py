"""Hostile model files and sidecars (issue #14 items 1, 3, 5): nothing in a .pt2 runs without trust, the
sidecar is a bounded schema, and non-finite or mis-scaled weights are refused by name.

Each .pt2 attack starts from a real torch.export of a small net; the payloads write a marker file, so a test
can show both that the payload is live (with trust, torch runs it as its docs warn) and that without trust
nothing ran."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from tests.builders import loaded_model
from tests.io.memcap import run_capped_many
from verification.errors import (
    InputTooLargeError,
    ModelForwardError,
    ModelLoadError,
    UntrustedFileError,
)
from verification.io.models import check_forward, load_model, load_model_bytes
from verification.io.pt2 import untrusted_pt2_problems
from verification.io.sidecar import read_sidecar_bytes

Edit = Callable[[str, bytes], bytes | None]


class _WritesMarker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def exported() -> bytes:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    program = torch.export.export(
        net.eval(), (torch.zeros(2, 1, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _rewrite(data: bytes, edit: Edit, extra: dict[str, bytes] | None = None) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    root = src.namelist()[0].split("/")[0]
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = edit(info.filename, src.read(info.filename))
            if content is not None:
                dst.writestr(info.filename, content)
        for name, content in (extra or {}).items():
            dst.writestr(f"{root}/{name}", content)
    return out.getvalue()


def _json_edit(suffix: str, change: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def edit(name: str, content: bytes) -> bytes:
        if name.endswith(suffix):
            doc = json.loads(content)
            change(doc)
            return json.dumps(doc).encode()
        return content

    return edit


def use_pickle(marker: Path) -> Edit:
    """The issue's attack: the weights config says use_pickle, the weight entry is a pickle."""
    config = _json_edit(
        "model_weights_config.json", lambda d: d["config"]["0.weight"].update(use_pickle=True)
    )

    def edit(name: str, content: bytes) -> bytes:
        if name.endswith("/weight_0"):
            return pickle.dumps(_WritesMarker(str(marker)))
        return config(name, content)

    return edit


def sample_inputs(marker: Path) -> Edit:
    """Sample inputs are loaded weights_only=True and, when that fails, again with weights_only=False."""

    def edit(name: str, content: bytes) -> bytes:
        if name.endswith("sample_inputs/model.pt"):
            buf = io.BytesIO()
            torch.save((_WritesMarker(str(marker)),), buf)
            return buf.getvalue()
        return content

    return edit


def sympy_expr(marker: Path) -> Edit:
    """Every symbolic expr_str goes through sympy.sympify, i.e. eval."""
    evil = f"s31 + 0*len(__import__('builtins').open('{marker}', 'w').name)"

    def edit(name: str, content: bytes) -> bytes:
        if name.endswith("models/model.json"):
            return content.decode().replace("Symbol('s31', positive=True, integer=True)", evil).encode()
        return content

    return edit


LIVE_ATTACKS = {"use_pickle": use_pickle, "sample_inputs": sample_inputs, "sympy_expr": sympy_expr}


@pytest.mark.parametrize("attack", sorted(LIVE_ATTACKS))
def test_pt2_payload_never_runs_without_trust(exported: bytes, tmp_path: Path, attack: str) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    data = _rewrite(exported, LIVE_ATTACKS[attack](marker))
    path = tmp_path / "evil.pt2"
    path.write_bytes(data)
    with pytest.raises(UntrustedFileError, match="Nothing was executed") as info:
        load_model(path)
    assert "trust=True" in str(info.value)
    assert len(str(info.value)) < 1000
    with pytest.raises(UntrustedFileError):
        load_model_bytes(data, "evil.pt2")
    assert not marker.exists()
    # The payload is live: with trust, torch.export.load runs it, as its documentation warns.
    with contextlib.suppress(ModelLoadError):  # the payload is not a tensor; what matters is that it ran
        load_model(path, trust=True)
    assert marker.exists()


def test_use_pickle_message_names_the_entry(exported: bytes, tmp_path: Path) -> None:
    data = _rewrite(exported, use_pickle(tmp_path / "m"))
    with pytest.raises(UntrustedFileError, match=r"'0\.weight' stored as a pickle \(use_pickle\)"):
        load_model_bytes(data, "evil.pt2")


def _graph(change: Callable[[dict], None]) -> Edit:
    return _json_edit("models/model.json", change)


def _add_node(doc: dict) -> None:
    doc["graph_module"]["graph"]["nodes"].insert(
        0,
        {
            "target": "torch.os.system",
            "inputs": [{"name": "command", "arg": {"as_string": "touch /tmp/x"}, "kind": 1}],
            "outputs": [],
            "metadata": {},
            "name": "pwn",
        },
    )


def _opaque_constant(doc: dict) -> None:
    doc["config"]["c"] = {
        "path_name": "opaque_obj_0",
        "is_param": False,
        "use_pickle": False,
        "tensor_meta": None,
    }


STATIC_ATTACKS: dict[str, tuple[Edit, dict[str, bytes], str]] = {
    "graph call target": (_graph(_add_node), {}, "torch.os.system"),
    "guard code": (_graph(lambda d: d.update(guards_code=["__import__('os').getpid() > 0"])), {}, "guard"),
    "range symbol loop": (
        _graph(lambda d: d["range_constraints"].update(u99999999999={})),
        {},
        "range_constraints",
    ),
    "opaque constant": (
        _json_edit("model_constants_config.json", _opaque_constant),
        {},
        "pickled Python object",
    ),
    "native code": (lambda n, c: c, {"data/aotinductor/model/model.so": b"\x7fELF"}, "compiled native code"),
    "unknown entry": (lambda n, c: c, {"data/other/x.pkl": b"\x80\x04N."}, "does not write"),
    "file-reading op": (
        _graph(
            lambda d: d["graph_module"]["graph"]["nodes"][0].update(target="torch.ops.aten.from_file.default")
        ),
        {},
        "from_file",
    ),
}


@pytest.mark.parametrize("attack", sorted(STATIC_ATTACKS))
def test_pt2_code_paths_are_refused_without_trust(exported: bytes, attack: str) -> None:
    edit, extra, match = STATIC_ATTACKS[attack]
    with pytest.raises(UntrustedFileError, match=match):
        load_model_bytes(_rewrite(exported, edit, extra), "evil.pt2")


def test_malformed_module_structure_is_typed(exported: bytes) -> None:
    bad_fqn = _graph(lambda d: d["graph_module"]["module_call_graph"][0].update(fqn=1))
    with pytest.raises(ModelLoadError, match="module structure cannot be restored"):
        load_model_bytes(_rewrite(exported, bad_fqn), "fqn.pt2")


def test_clean_export_loads_untrusted(exported: bytes) -> None:
    loaded = load_model_bytes(exported, "net.pt2")
    assert loaded.source_format == "export"
    assert loaded.num_classes == 2


def _traversal(exported: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in zipfile.ZipFile(io.BytesIO(exported)).infolist():
            zf.writestr(info.filename, zipfile.ZipFile(io.BytesIO(exported)).read(info.filename))
        zf.writestr("archive/../../etc/evil", b"x")
    return out.getvalue()


def test_pt2_archive_bounds(exported: bytes) -> None:
    with pytest.raises(ModelLoadError, match="path traversal"):
        load_model_bytes(_traversal(exported), "t.pt2")
    with pytest.raises(InputTooLargeError, match="decompress to"):
        untrusted_pt2_problems(exported, "small.pt2", max_bytes=len(exported) // 2, trust=True)
    # a zero-length weight record whose config declares 10^10 floats: torch would allocate zeros of that size
    big = _json_edit(
        "model_weights_config.json",
        lambda d: d["config"]["0.weight"]["tensor_meta"].update(
            sizes=[{"as_int": 100000}, {"as_int": 100000}]
        ),
    )

    def empty_record(name: str, content: bytes) -> bytes:
        return b"" if name.endswith("/weight_0") else big(name, content)

    for trust in (False, True):
        with pytest.raises(InputTooLargeError, match="declares tensors"):
            load_model_bytes(_rewrite(exported, empty_record), "zeros.pt2", trust=trust)
    bomb = _rewrite(exported, lambda n, c: c, {"extra/pad": b"\0" * (8 << 20)})
    deflated = io.BytesIO()
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in zipfile.ZipFile(io.BytesIO(bomb)).infolist():
            zf.writestr(info.filename, zipfile.ZipFile(io.BytesIO(bomb)).read(info.filename))
    with pytest.raises(InputTooLargeError, match="zip bomb"):
        load_model_bytes(deflated.getvalue(), "bomb.pt2", trust=True)


# --- sidecar schema -----------------------------------------------------------------------------------------

BAD_SIDECARS: dict[str, tuple[dict, str]] = {
    "unknown key": ({"architecture": "resnet18", "learning_rate": 0.1}, "unknown sidecar key"),
    "huge input size": ({"architecture": "resnet18", "input_size": [100000, 100000]}, "input_size"),
    "width_mult 1000": (
        {"architecture": "mobilenet_v3_small", "arch_kwargs": {"width_mult": 1000}},
        "width_mult must be between 0.1 and 2",
    ),
    "unet base 1e5": (
        {"architecture": "unet", "arch_kwargs": {"base": 100000, "depth": 5}},
        "base must be between",
    ),
    "checkpoint_path": (
        {"architecture": "timm/resnet18", "arch_kwargs": {"checkpoint_path": "/etc/passwd"}},
        "does not accept arguments 'checkpoint_path'",
    ),
    "kwargs path as value": (
        {"architecture": "resnet18", "arch_kwargs": {"zero_init_residual": "/x"}},
        "true or false",
    ),
    "NaN mean": (
        {"architecture": "resnet18", "mean": [float("nan")]},
        "'mean' holds nan, which is not a finite",
    ),
    "inf std": ({"architecture": "resnet18", "std": [float("inf")]}, "'std' holds inf"),
    "zero std": ({"architecture": "resnet18", "std": [0.0]}, "'std' must hold numbers from 1e-06"),
    "tiny std": ({"architecture": "resnet18", "std": [1e-30]}, "'std' must hold numbers from 1e-06"),
    "huge mean": ({"architecture": "resnet18", "mean": [1e300]}, "'mean' must hold numbers"),
    "million classes": ({"class_names": [f"c{i}" for i in range(10**6)]}, "at most 10,000"),
    "long class name": ({"class_names": ["x" * 10**6]}, "1 to 200 characters"),
    "bool channels": ({"in_channels": True}, "in_channels"),
}


@pytest.mark.parametrize("case", sorted(BAD_SIDECARS))
def test_bad_sidecars_are_typed_and_short(case: str) -> None:
    sidecar, match = BAD_SIDECARS[case]
    with pytest.raises(ModelLoadError, match=match) as info:
        load_model_bytes(b"not even read", "w.safetensors", sidecar_json=sidecar)
    assert len(str(info.value)) < 600


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[" * 100000 + "]" * 100000, "nests deeper"),
        ('{"arch_kwargs": ' * 5000 + "{}" + "}" * 5000, "nests deeper"),
        ('{"num_classes": ' + "9" * 5001 + "}", "5,001 characters"),
        ('{"mean": [NaN]}', "NaN, which is not valid JSON"),
        ('{"std": [1e400]}', "std"),
        (b'{"architecture": "\xff"}', "not UTF-8"),
        ("{'architecture': 1}", "not valid JSON"),
    ],
)
def test_sidecar_json_is_parsed_with_limits(tmp_path: Path, text: str | bytes, match: str) -> None:
    path = tmp_path / "w.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"unused")
    with pytest.raises(ModelLoadError, match=match) as info:
        load_model(weights, sidecar=path)
    assert len(str(info.value)) < 600


def test_oversized_sidecar_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"class_names": ["a" * 100] * 20000}))
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(InputTooLargeError):
        load_model(tmp_path / "w.safetensors", sidecar=path)
    assert read_sidecar_bytes(b'{"architecture": "unet"}') == {"architecture": "unet"}


def test_model_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(tmp_path)


# --- weights that load silently wrong -----------------------------------------------------------------------


def _unet_weights(scale: float = 1.0, nan_key: str | None = None) -> bytes:
    from verification.io.architectures import build_architecture

    torch.manual_seed(0)
    sd = build_architecture("unet", num_classes=2, in_channels=1, base=2, depth=2).state_dict()
    sd = {k: (v * scale if v.is_floating_point() else v) for k, v in sd.items()}
    if nan_key is not None:
        sd[nan_key] = sd[nan_key].clone()
        sd[nan_key].view(-1)[0] = float("nan")
    return save_safetensors({k: v.contiguous() for k, v in sd.items()})


SIDE = {"architecture": "unet", "arch_kwargs": {"base": 2, "depth": 2}, "input_size": [32, 32]}


def test_weights_scaled_by_1e30_are_refused() -> None:
    assert load_model_bytes(_unet_weights(), "ok.safetensors", sidecar_json=SIDE).num_classes == 2
    with pytest.raises(ModelLoadError, match="magnitude"):
        load_model_bytes(_unet_weights(1e30), "big.safetensors", sidecar_json=SIDE)


def test_nan_weight_is_refused_by_name() -> None:
    with pytest.raises(ModelLoadError, match=r"NaN or infinite values in 'down\.0\.0\.weight'"):
        load_model_bytes(_unet_weights(nan_key="down.0.0.weight"), "nan.safetensors", sidecar_json=SIDE)


def test_overflowing_weights_fail_the_realistic_dry_run() -> None:
    """Weights of 1e5 per layer: finite and below the weight cap, all-zero input → zero output (the old dry
    run passed), but any real picture overflows to inf by the eighth layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(8):
        lin = nn.Linear(64 if i else 32 * 32, 64, bias=False)
        nn.init.constant_(lin.weight, 1e5)
        layers.append(lin)
    net = nn.Sequential(*layers, nn.Linear(64, 2, bias=False)).eval()
    with torch.no_grad():
        assert torch.isfinite(net(torch.zeros(1, 1, 32, 32))).all()
    loaded = loaded_model(net, input_size=(32, 32), class_names=("a", "b"), mean=(0.5,), std=(0.25,))
    with pytest.raises(ModelForwardError, match="NaN or infinite outputs on a test image"):
        check_forward(loaded)


def test_state_dict_nested_100000_deep_is_typed() -> None:
    """A torch.save zip whose data.pkl nests {"model": {"model": ...}} 100,000 deep (made with pickle opcodes,
    no recursion): the weights-only unpickler builds it; the loader must not recurse into it."""
    ops = bytearray(b"\x80\x02}")
    ops += (b"X" + (5).to_bytes(4, "little") + b"model}") * 100_000 + b"s" * 100_000 + b"."
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(1)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, bytes(ops) if info.filename.endswith("data.pkl") else src.read(info.filename))
    with pytest.raises(ModelLoadError, match="more than 4 levels"):
        load_model_bytes(out.getvalue(), "deep.pt", architecture="resnet18")


def _deflated_state_dict(tensor: torch.Tensor) -> bytes:
    """``torch.save({"w": tensor})`` (entries stored) written again with every entry deflated."""
    buf = io.BytesIO()
    torch.save({"w": tensor}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def test_compressed_state_dict_is_bounded_before_torch_load(tmp_path: Path) -> None:
    """torch.load inflates and allocates every record of a .pt zip; the loader checks the declared sizes
    first. In a child capped at 256 MiB over its imports, under a 16 MiB decoded limit: 64 MiB of deflated
    zeros (1,000:1, a zip bomb) and a 24 MiB uint8 record deflated ~4:1 (under the bomb ratio; refused by
    its declared size) both raise InputTooLargeError naming the file, with under 8 MiB of peak growth. Before
    the check torch.load allocated each record first (peak growth >= 64 and 24 MiB); a small deflated state
    dict still reads."""
    gen = torch.Generator().manual_seed(0)
    files = [
        _deflated_state_dict(torch.zeros(16 << 20)),
        _deflated_state_dict(torch.randint(0, 4, (24 << 20,), dtype=torch.uint8, generator=gen)),
    ]
    assert max(len(f) for f in files) < 8 << 20
    paths = []
    for i, blob in enumerate(files):
        paths.append(tmp_path / f"{i}.pt")
        paths[-1].write_bytes(blob)
    body = "verification.io.models.load_model_bytes(data[{0}], 'sd{0}.pt', max_decoded_bytes=16 << 20)"
    results = run_capped_many([body.format(i) for i in range(len(files))], paths, cap_bytes=256 << 20)
    for i, (res, match) in enumerate(zip(results, ("zip bomb", "declares tensor data of 24 MiB"))):
        assert (res["outcome"], res["error"]) == ("typed", "InputTooLargeError"), res
        assert f"'sd{i}.pt'" in str(res["message"]), res
        assert match in str(res["message"]), res
        peak = res["peak_bytes"]
        assert isinstance(peak, int), res
        assert peak < 8 << 20, res
    with pytest.raises(ModelLoadError, match=r"unexpected keys \(w\)"):  # read, then refused by its keys
        load_model_bytes(_deflated_state_dict(torch.ones(3)), "small.pt", architecture="resnet18")


def test_dry_run_activations_are_bounded_before_the_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A U-Net of base 2, depth 2 at 1024² holds 56 MiB of activations at its peak (measured on the meta
    device: 14 float32 maps of 1024² alive at once); under a 32 MiB limit it is refused before any real
    forward, and accepted at 64²."""
    import verification.io.models as models

    monkeypatch.setattr(models, "MAX_DRY_RUN_BYTES", 32 << 20)
    weights = _unet_weights()
    side = {"architecture": "unet", "arch_kwargs": {"base": 2, "depth": 2}}
    with pytest.raises(InputTooLargeError, match="MiB of activations"):
        load_model_bytes(weights, "u.safetensors", sidecar_json={**side, "input_size": [1024, 1024]})
    assert (
        load_model_bytes(weights, "u.safetensors", sidecar_json={**side, "input_size": [64, 64]}).num_classes
        == 2
    )
