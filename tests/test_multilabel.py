"""Multi-label models (issue #15): sigmoid probabilities per label, default targets, one map per label, the
hint that a head looks multi-label, and the torchxrayvision DenseNet (weights=None, 1×64×64).

Independent references: ``torch.sigmoid`` of the model's own logits, pytorch-grad-cam's ``GradCAM`` with
``ClassifierOutputTarget`` per label, hand-built probability rows for the default targets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from verification.cam import LabelLogit, compute_cams
from verification.cam.targets import default_labels, task_target
from verification.io.records import LoadedModel
from verification.multilabel import label_cams, label_view, multilabel_hint, parse_label_set

LABELS = ("atelectasis", "effusion", "nodule", "pneumothorax", "cardiomegaly")


def tiny(seed: int = 0, last: nn.Module | None = None) -> nn.Sequential:
    """A tiny CNN with 5 outputs (one per label); ``last`` appended after the Linear head (e.g. a Sigmoid)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, len(LABELS)),
    ]
    if last is not None:
        layers.append(last)
    net = nn.Sequential(*layers).eval()
    head = net[6]
    assert isinstance(head, nn.Linear)
    with torch.no_grad():  # spread the logits so that some labels are clearly positive, some negative
        head.weight.mul_(8.0)
        head.bias.copy_(torch.tensor([2.0, -2.0, 0.5, -4.0, 1.0]))
    return net


def loaded(module: nn.Module, task: str = "multilabel", names: tuple[str, ...] = LABELS) -> LoadedModel:
    return LoadedModel(
        module=module,
        in_channels=1,
        input_size=(32, 32),
        class_names=names,
        mean=(0.5,),
        std=(0.25,),
        source_format="module",
        content_hash=f"tiny-{task}-{id(module)}",
        task=task,  # type: ignore[arg-type]
    )


def batch(n: int = 4, seed: int = 1, size: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=gen)


# ------------------------------------------------------------------------------------------- probabilities


def test_compute_cams_on_a_multilabel_model_reports_the_sigmoid_of_each_logit() -> None:
    model = loaded(tiny())
    x = batch()
    (res,) = compute_cams(model, x, layers=["2"])
    with torch.no_grad():
        logits = model.module(x)
    np.testing.assert_allclose(res.probs, torch.sigmoid(logits).numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(res.probs.sum(1), 1.0, atol=0.05), "independent labels, not a softmax"
    assert res.target_kind == "label_logit"
    # the default map explains each image's top label, like the single-label default
    assert res.targets == tuple(int(k) for k in logits.argmax(1))
    # the same module loaded as single-label keeps its softmax (nothing changes there)
    (single,) = compute_cams(loaded(model.module, "classification"), x, layers=["2"])
    np.testing.assert_allclose(single.probs, torch.softmax(logits, 1).numpy(), rtol=1e-6, atol=1e-7)
    assert single.target_kind == "logit"


def test_the_reported_0_212_vs_0_862_case() -> None:
    """The issue's numbers: a label whose sigmoid is 0.862 was reported as its softmax share 0.212."""
    z = torch.tensor([[1.83, 1.5, 0.9, 1.2, 0.7, 0.2]])
    p = task_target(loaded(tiny()), None).probabilities(z)  # type: ignore[union-attr]
    assert abs(float(p[0, 0]) - 0.862) < 1e-3
    assert abs(float(torch.softmax(z, 1)[0, 0]) - 0.862) > 0.5  # the old, wrong number is far off


def test_task_target_reads_indices_for_the_task_and_leaves_targets_alone() -> None:
    ml, single = loaded(tiny()), loaded(tiny(), "classification")
    assert isinstance(task_target(ml, None), LabelLogit)
    assert task_target(ml, 2).classes == 2  # type: ignore[union-attr]
    assert task_target(ml, [1, 3]).classes == [1, 3]  # type: ignore[union-attr]
    assert task_target(single, None) is None
    given = LabelLogit(4)
    assert task_target(ml, given) is given
    assert task_target(tiny(), None) is None  # a bare module has no task


def test_default_labels_are_the_positive_labels_or_the_top_one() -> None:
    probs = torch.tensor(
        [
            [0.9, 0.2, 0.6, 0.5, 0.1],  # 0.5 counts as positive (p ≥ 0.5), in descending order
            [0.1, 0.3, 0.2, 0.05, 0.4],  # nothing positive → the top label
            [0.1, 0.1, 0.1, 0.1, 0.1],  # ties → the first
        ]
    )
    assert default_labels(probs) == ((0, 2, 3), (4,), (0,))
    assert default_labels(probs, threshold=0.85) == ((0,), (4,), (0,))


# ------------------------------------------------------------------------------------------- maps


def test_one_map_per_label_equals_pytorch_grad_cam_with_classifier_output_target() -> None:
    torch.set_num_threads(1)
    model = loaded(tiny())
    x = batch(3)
    lm = label_cams(model, x, layers=["2"])
    with torch.no_grad():
        probs = torch.sigmoid(model.module(x))
    expected = default_labels(probs)
    assert [k for i in range(3) for k in expected[i]] == list(lm.labels)
    assert list(lm.images) == [i for i in range(3) for _ in expected[i]]
    assert sum(len(e) for e in expected) > 3, "some image has several positive labels"
    np.testing.assert_allclose(lm.probs, probs.numpy(), rtol=1e-6)
    (res,) = lm.results
    layer = dict(model.module.named_modules())["2"]
    for r, (i, k) in enumerate(zip(lm.images, lm.labels)):
        with GradCAM(model=model.module, target_layers=[layer]) as cam:
            theirs = cam(input_tensor=x[i : i + 1], targets=[ClassifierOutputTarget(k)])[0]
            acts = cam.activations_and_grads.activations[0].numpy()
            grads = cam.activations_and_grads.gradients[0].numpy()
            raw = cam.get_cam_image(x[i : i + 1], layer, [ClassifierOutputTarget(k)], acts, grads, False)
        norm = scale_cam_image(np.maximum(raw, 0))[0]
        ours = scale_cam_image(np.maximum(res.raw[r : r + 1], 0))[0]
        assert np.abs(ours - norm).max() <= 1e-4, f"row {r} (image {i}, label {LABELS[k]})"
        assert np.corrcoef(res.maps[r].ravel(), theirs.ravel())[0, 1] >= 0.999
    maps = lm.maps_for(0)
    assert list(maps) == [LABELS[k] for k in expected[0]]


def test_maps_of_chosen_labels_and_bad_label_indices() -> None:
    model = loaded(tiny())
    x = batch(2)
    lm = label_cams(model, x, [[1, 3], None], layers=["2"])
    assert lm.labels[:2] == (1, 3)
    assert lm.images[:2] == (0, 0)
    from verification.errors import ShapeError

    with pytest.raises(ShapeError, match="out of range"):
        label_cams(model, x, [[7], None], layers=["2"])
    with pytest.raises(ShapeError, match="2 images"):
        label_cams(model, x, [[1]], layers=["2"])


def test_a_label_view_is_that_labels_binary_task() -> None:
    model = loaded(tiny())
    x = batch(4)
    view = label_view(model, 2)
    with torch.no_grad():
        z = model.module(x)[:, 2]
        out = view.module(x)
    np.testing.assert_allclose(torch.softmax(out, 1)[:, 0].numpy(), torch.sigmoid(z).numpy(), rtol=1e-6)
    assert view.class_names == ("nodule", "not nodule")
    assert view.task == "classification"
    assert {n for n, _ in view.module.named_modules()} == {n for n, _ in model.module.named_modules()}
    (a,) = compute_cams(view, x, layers=["2"], target=0)
    (b,) = compute_cams(model, x, layers=["2"], target=2)
    np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5, atol=1e-7)


def test_label_sets_parse_names_indices_and_pipes() -> None:
    assert parse_label_set(None, LABELS) is None
    assert parse_label_set([], LABELS) == ()
    assert parse_label_set("nodule", LABELS) == (2,)
    assert parse_label_set("effusion|nodule", LABELS) == (1, 2)
    assert parse_label_set(["nodule", 0], LABELS) == (0, 2)
    from verification.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="'fracture' is not one of"):
        parse_label_set(["fracture"], LABELS)


# ------------------------------------------------------------------------------------------- the hint


def test_the_hint_names_what_makes_a_head_look_multilabel() -> None:
    assert multilabel_hint(loaded(tiny(), "classification")) is None  # a Linear head: nothing to say
    hint = multilabel_hint(loaded(tiny(last=nn.Sigmoid()), "classification"))
    assert hint is not None
    assert "Sigmoid" in hint
    assert "already probabilities" in hint
    assert multilabel_hint(loaded(tiny(last=nn.Sigmoid()), "multilabel")) is None  # already multi-label
    one = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1), nn.Sigmoid()
    )
    assert multilabel_hint(loaded(one, "classification", ("finding",))) is None  # one output: binary


def test_torchxrayvision_densenet_weights_none_is_flagged_and_reads_as_multilabel() -> None:
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(0)
    net = xrv.models.DenseNet(weights=None).eval()
    names = tuple(xrv.models.DenseNet.targets)
    assert len(names) == 18
    hint = multilabel_hint(loaded(net, "classification", names))
    assert hint is not None
    assert "torchxrayvision" in hint
    model = loaded(net, "multilabel", names)
    model = LoadedModel(**{**model.__dict__, "input_size": (64, 64)})
    x = batch(1, size=64)
    lm = label_cams(model, x, layers=["features.denseblock4"])
    with torch.no_grad():
        p = torch.sigmoid(net(x))
    np.testing.assert_allclose(lm.probs, p.numpy(), rtol=1e-5)
    assert list(lm.labels) == list(default_labels(p)[0])
    k = lm.labels[0]
    layer = dict(net.named_modules())["features.denseblock4"]
    with GradCAM(model=net, target_layers=[layer]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0]
    assert np.corrcoef(lm.results[0].maps[0].ravel(), theirs.ravel())[0, 1] >= 0.999


# ------------------------------------------------------------------------------------------- loading


def test_a_sidecar_multilabel_task_reaches_the_maps(tmp_path: Path) -> None:
    """The user's path: weights + sidecar with task "multilabel" → sigmoid probabilities, label names."""
    from verification.io.models import load_model

    net = tiny()
    buf = io.BytesIO()
    torch.save(net, buf)
    path = tmp_path / "ml.pt"
    path.write_bytes(buf.getvalue())
    (tmp_path / "ml.json").write_text(
        json.dumps({"task": "multilabel", "class_names": list(LABELS), "input_size": 32})
    )
    model = load_model(path, trust=True)
    assert model.task == "multilabel"
    assert model.class_names == LABELS
    x = batch(2)
    (res,) = compute_cams(model, x, layers=["2"])
    with torch.no_grad():
        np.testing.assert_allclose(res.probs, torch.sigmoid(net(x)).numpy(), rtol=1e-6)


def test_score_cam_weights_a_multilabel_model_by_the_labels_sigmoid() -> None:
    """Score-CAM's paper weighting scores p_c(X ⊙ M_k) − p_c(X_b): for a multi-label model p_c is σ(z_c)."""
    model = loaded(tiny())
    x = batch(2)
    (res,) = compute_cams(model, x, methods=["scorecam"], layers=["2"])
    with torch.no_grad():
        logits = model.module(x)
    np.testing.assert_allclose(res.probs, torch.sigmoid(logits).numpy(), rtol=1e-5, atol=1e-6)
    assert res.target_kind == "label_logit"


def test_a_static_batch_export_gets_label_maps_for_several_images(tmp_path: Path) -> None:
    """A torch.export program with its batch fixed to 1 (the default export), multi-label by its sidecar:
    probabilities and one map per (image, label) for a batch of 3, and its label views run too."""
    from verification.io.models import load_model

    net = tiny()
    program = torch.export.export(net, (torch.randn(1, 1, 32, 32),))
    torch.export.save(program, tmp_path / "m.pt2")
    side = {"task": "multilabel", "class_names": list(LABELS), "input_size": 32, "in_channels": 1}
    (tmp_path / "m.json").write_text(json.dumps(side))
    model = load_model(tmp_path / "m.pt2")
    x = batch(3)
    lm = label_cams(model, x, layers=["2"])
    with torch.no_grad():
        probs = torch.sigmoid(net(x))
    np.testing.assert_allclose(lm.probs, probs.numpy(), rtol=1e-5, atol=1e-6)
    assert len(lm.labels) == sum(len(k) for k in default_labels(probs))
    eager = label_cams(loaded(net), x, layers=["2"])
    np.testing.assert_allclose(lm.results[0].maps, eager.results[0].maps, atol=1e-4)
    (view,) = compute_cams(label_view(model, 0), x, layers=["2"], target=0)
    assert view.maps.shape == (3, 32, 32)


def test_captum_attributions_of_a_multilabel_model_report_sigmoid_probabilities() -> None:
    from verification.cam import compute_attribution

    model = loaded(tiny())
    x = batch(2)
    res = compute_attribution(model, x, method="saliency")
    with torch.no_grad():
        logits = model.module(x)
    np.testing.assert_allclose(res.probs, torch.sigmoid(logits).numpy(), rtol=1e-5, atol=1e-6)
    assert res.targets == tuple(int(k) for k in logits.argmax(1))


def test_the_cam_command_writes_one_map_per_label(tmp_path: Path) -> None:
    """``python -m verification cam`` on a multi-label model (no --target): each image's file also holds one
    map per label it calls present, equal to label_cams on the same input."""
    from PIL import Image

    from verification.batch import load_image_cams
    from verification.cli import main
    from verification.io.images import load_image, to_tensor
    from verification.io.models import load_model

    net = tiny()
    buf = io.BytesIO()
    torch.save(net, buf)
    (tmp_path / "ml.pt").write_bytes(buf.getvalue())
    side = {"task": "multilabel", "class_names": list(LABELS), "input_size": 32, "mean": 0.5, "std": 0.25}
    (tmp_path / "ml.json").write_text(json.dumps(side))
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(2):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
    out = tmp_path / "out"
    code = main(
        ["cam", str(tmp_path / "ml.pt"), str(tmp_path / "img"), "-o", str(out), "--trust", "--layer", "2"]
    )
    assert code == 0
    model = load_model(tmp_path / "ml.pt", trust=True)
    x = to_tensor([load_image(tmp_path / "img" / f"{i}.png") for i in range(2)], model)
    want = label_cams(model, x, layers=["2"])
    for i in range(2):
        (npz,) = out.glob(f"{i}*.npz")
        _, _, meta = load_image_cams(npz)
        expected = want.maps_for(i)
        assert meta["labels"] == list(expected)
        for label, m in expected.items():
            np.testing.assert_allclose(meta["label_maps"][label]["gradcam@2"], m, atol=1e-5)
        np.testing.assert_allclose(meta["probs"], want.probs[i], rtol=1e-5)
