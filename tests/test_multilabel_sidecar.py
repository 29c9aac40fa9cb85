"""Label names and the task in the sidecar (issue #15): the downloadable sidecar reads back as the model it
describes, the form's merge of typed names and task, and the error a missing field gives on each surface —
the command line / API wording ("--architecture") and the form's ("the **Architecture** field below")."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from ui.uploads import form_message, form_sidecar, parse_names
from verification.errors import MissingFieldError, ModelLoadError
from verification.io.models import load_model
from verification.io.sidecar import (
    Sidecar,
    parse_sidecar,
    read_sidecar_bytes,
    sidecar_bytes,
    sidecar_document,
    sidecar_of,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "demo" / "samples" / "sound_model.safetensors"


def test_every_sidecar_field_round_trips_through_the_file() -> None:
    sc = Sidecar(
        architecture="mobilenet_v3_small",
        arch_kwargs={"width_mult": 0.5, "reduced_tail": True},
        in_channels=1,
        num_classes=3,
        class_names=("Atelectasis", "Pleural_Thickening", "Épanchement"),
        input_size=(224, 200),
        mean=(0.5,),
        std=(0.25,),
        task="multilabel",
        garbage_class=None,
    )
    data = sidecar_bytes(sc)
    assert parse_sidecar(read_sidecar_bytes(data)) == sc
    assert json.loads(data)["task"] == "multilabel"
    assert "garbage_class" not in json.loads(data)  # None is left out, never written as null
    assert parse_sidecar(sidecar_document(Sidecar())) == Sidecar()


def test_a_sidecar_that_could_not_be_read_back_is_refused_when_written() -> None:
    with pytest.raises(ModelLoadError, match="duplicates"):
        sidecar_bytes(Sidecar(class_names=("a", "a")))


def test_the_downloaded_sidecar_reloads_the_same_model(tmp_path: Path) -> None:
    shutil.copy(SAMPLE, tmp_path / "m.safetensors")
    shutil.copy(SAMPLE.with_suffix(".json"), tmp_path / "m.json")
    model = load_model(tmp_path / "m.safetensors")
    named = Sidecar(**{**sidecar_of(model).__dict__, "class_names": ("clear", "mass", "fluid")})
    named = Sidecar(**{**named.__dict__, "task": "multilabel"})
    (tmp_path / "m.json").write_bytes(sidecar_bytes(named))
    again = load_model(tmp_path / "m.safetensors")
    assert again.class_names == ("clear", "mass", "fluid")
    assert again.task == "multilabel"
    assert sidecar_of(again) == named
    for key in ("architecture", "arch_kwargs", "in_channels", "input_size", "mean", "std"):
        assert getattr(sidecar_of(again), key) == getattr(sidecar_of(model), key)


def test_weights_only_names_the_cli_flag_and_carries_the_field(tmp_path: Path) -> None:
    shutil.copy(SAMPLE, tmp_path / "bare.safetensors")
    with pytest.raises(MissingFieldError) as err:
        load_model(tmp_path / "bare.safetensors")
    assert err.value.field == "architecture"
    assert "--architecture" in str(err.value)
    assert "pass the architecture argument" not in str(err.value)
    assert isinstance(err.value, ModelLoadError)  # callers catching the old type still catch it


def test_the_form_says_which_of_its_fields_to_fill() -> None:
    exc = MissingFieldError("'x' holds only weights; ... pass --architecture", field="architecture")
    text = form_message(exc, "chexnet.safetensors")
    assert "choose its architecture in the **Architecture** field below" in text
    assert "chexnet.safetensors" in text
    assert "--architecture" not in text
    names = MissingFieldError(
        "the sidecar lists 2 class names but the model has 18 outputs", field="class_names"
    )
    text = form_message(names, "m.pt", outputs=18)
    assert "**Label names**" in text
    assert "(18)" in text


def test_wrong_name_count_from_the_loader_carries_the_field(tmp_path: Path) -> None:
    shutil.copy(SAMPLE, tmp_path / "m.safetensors")
    doc = json.loads(SAMPLE.with_suffix(".json").read_text())
    doc.pop("num_classes")
    doc["class_names"] = ["only", "two"]
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(MissingFieldError) as err:
        load_model(tmp_path / "m.safetensors")
    assert err.value.field == "num_classes"  # two names say two outputs; the weights have three
    assert "**Label names**" in form_message(err.value, "m.safetensors")


def test_typed_names_and_the_task_go_over_the_uploaded_sidecar() -> None:
    uploaded = json.dumps({"architecture": "resnet18", "num_classes": 3, "class_names": ["a", "b", "c"]})
    out = form_sidecar(uploaded.encode(), ("x", "y", "z", "w"), "multilabel")
    assert out is not None
    doc = json.loads(out)
    assert doc["class_names"] == ["x", "y", "z", "w"]
    assert "num_classes" not in doc  # the typed names are the newer word
    assert doc["task"] == "multilabel"
    assert doc["architecture"] == "resnet18"
    assert form_sidecar(None, None, "auto") is None
    assert json.loads(form_sidecar(None, None, "classification") or b"") == {"task": "classification"}
    with pytest.raises(ModelLoadError, match="duplicates"):
        form_sidecar(None, ("a", "a"), "auto")
    with pytest.raises(ModelLoadError):
        form_sidecar(b"{not json", None, "auto")


def test_names_are_one_per_line() -> None:
    assert parse_names("  Effusion \n\nNodule\n") == ("Effusion", "Nodule")
    assert parse_names("") is None
    assert parse_names(" \n ") is None


def test_a_pickled_module_gets_its_names_and_task_from_the_form(tmp_path: Path) -> None:
    """The whole-module path (no architecture) takes the same sidecar: names and task from the form."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5)
    ).eval()
    buf = io.BytesIO()
    torch.save(net, buf)
    path = tmp_path / "ml.pt"
    path.write_bytes(buf.getvalue())
    side = form_sidecar(None, ("a", "b", "c", "d", "e"), "multilabel")
    assert side is not None
    (tmp_path / "ml.json").write_bytes(side)
    model = load_model(path, trust=True)
    assert model.class_names == ("a", "b", "c", "d", "e")
    assert model.task == "multilabel"
