"""Garbage class: head discovery, logit preservation, a short fine-tune that rejects its OOD, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.builders import loaded_model
from verification.errors import LayerError, VerificationError
from verification.garbage import (
    REJECTED_MESSAGE,
    add_garbage_class,
    evaluate_rejection,
    find_classifier_head,
    last_block,
    predict,
    save,
    widen_linear,
)
from verification.io.architectures import build_architecture
from verification.io.records import LoadedModel


@pytest.mark.parametrize(
    ("arch", "head", "block"),
    [
        ("resnet18", "fc", "layer4.1"),
        ("mobilenet_v3_small", "classifier.3", "features.12"),
        ("densenet121", "classifier", "features.denseblock4"),
    ],
)
def test_find_head_and_last_block(arch: str, head: str, block: str) -> None:
    module = build_architecture(arch, num_classes=3, in_channels=1)
    assert find_classifier_head(module, 3) == head
    assert last_block(module, head) == block


def test_no_linear_head_is_a_layer_error() -> None:
    with pytest.raises(LayerError, match="Linear"):
        find_classifier_head(nn.Sequential(nn.Conv2d(1, 3, 1)), 3)


def _images(n: int, kind: str, seed: int) -> torch.Tensor:
    """Toy 1-channel 24×24 world: class 0 a bright square, class 1 a bright horizontal bar, both on dark
    noise; OOD is inverted-looking bright noise (film-like negatives) — a different intensity regime."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.rand(n, 1, 24, 24, generator=g)
    if kind == "square":
        x[:, :, 8:16, 8:16] += 0.9
    elif kind == "bar":
        x[:, :, 10:14, 2:22] += 0.9
    elif kind == "ood":
        x = 0.6 + 0.4 * torch.rand(n, 1, 24, 24, generator=g)
    return x


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _trained_toy() -> LoadedModel:
    torch.manual_seed(0)
    net = _Toy()
    x = torch.cat([_images(32, "square", 1), _images(32, "bar", 2)])
    y = torch.tensor([0] * 32 + [1] * 32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for p in net.parameters():
        p.grad = None
    return loaded_model(net, input_size=(24, 24))


@pytest.fixture(scope="module")
def toy() -> LoadedModel:
    return _trained_toy()


def test_widened_head_preserves_old_logits(toy: LoadedModel) -> None:
    x = torch.cat([_images(4, "square", 5), _images(4, "ood", 6)])
    module = toy.module
    head = find_classifier_head(module, 2)
    old = module.get_submodule(head)
    assert isinstance(old, nn.Linear)
    wide = widen_linear(old)
    feats = nn.Sequential(*list(module.classifier)[:-1])
    with torch.no_grad():
        h = feats(module.pool(module.features(x)))
        assert torch.equal(wide(h)[:, :2], old(h))
        assert wide(h).shape == (8, 3)
    # and through add_garbage_class with the learning rate at zero: the old classes' logits are unchanged
    g = add_garbage_class(toy, x[4:], x[:4], [0] * 4, epochs=1, lr=0.0)
    with torch.no_grad():
        assert torch.allclose(g.module(x)[:, :2], toy.module(x), atol=0, rtol=0)


@pytest.mark.parametrize("scope", ["head", "head+last_block"])
def test_short_fine_tune_rejects_ood(toy: LoadedModel, scope: str) -> None:
    before = {k: v.clone() for k, v in toy.module.state_dict().items()}
    x_in = torch.cat([_images(24, "square", 10), _images(24, "bar", 11)])
    y_in = [0] * 24 + [1] * 24
    ood = _images(24, "ood", 12)
    model = add_garbage_class(toy, ood, x_in, y_in, train=scope, epochs=15, seed=0, lr=5e-2, batch_size=16)  # type: ignore[arg-type]
    assert model.class_names == ("normal", "nodule", "garbage")
    assert model.garbage_class == "garbage"
    assert model.garbage_index == 2
    # held-out sets, different seeds
    test_in = torch.cat([_images(20, "square", 20), _images(20, "bar", 21)])
    report = evaluate_rejection(model, _images(20, "ood", 22), test_in)
    assert report.ood_rejection_rate >= 0.9, report.summary()
    assert report.false_rejection_rate <= 0.1, report.summary()
    assert report.counts["ood_total"] == 20
    assert report.counts["in_dist_total"] == 40
    # the caller's model is untouched: same weights, no gradients, still the 2-class head
    after = toy.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in toy.module.parameters())
    assert toy.module.classifier[-1].out_features == 2


def test_predict_reports_rejection_not_diagnosis(toy: LoadedModel) -> None:
    model = add_garbage_class(
        toy, _images(16, "ood", 30), _images(16, "square", 31), [0] * 16, epochs=15, lr=5e-2, batch_size=16
    )
    preds = predict(model, torch.cat([_images(3, "square", 32), _images(3, "ood", 33)]))
    assert [p.rejected for p in preds] == [False] * 3 + [True] * 3
    for p in preds[3:]:
        assert p.message == REJECTED_MESSAGE
        assert p.class_name is None
        assert p.class_index is None
        assert p.garbage_probability is not None
        assert p.garbage_probability > 0.5
    assert preds[0].class_name == "normal"
    assert "normal" in preds[0].message
    assert sum(preds[0].probs) == pytest.approx(1.0, abs=1e-5)
    # a model without a garbage class never rejects, and evaluate_rejection refuses it
    assert not any(p.rejected for p in predict(toy, _images(3, "ood", 34)))
    with pytest.raises(VerificationError, match="no garbage class"):
        evaluate_rejection(toy, _images(2, "ood", 35), _images(2, "square", 36))


def test_refuses_a_second_garbage_class(toy: LoadedModel) -> None:
    model = add_garbage_class(toy, _images(2, "ood", 40), _images(2, "bar", 41), [1, 1], epochs=1)
    with pytest.raises(VerificationError, match="already has a garbage class"):
        add_garbage_class(model, _images(2, "ood", 40), _images(2, "bar", 41), [1, 1], epochs=1)


def test_save_and_reload_with_class_names(tmp_path: Path) -> None:
    from verification.io.models import load_model

    torch.manual_seed(0)
    module = build_architecture("resnet18", num_classes=2, in_channels=1)
    loaded = loaded_model(
        module,
        input_size=(32, 32),
        class_names=("normal", "effusion"),
        mean=(0.5,),
        std=(0.25,),
        name="r18",
        source_format="architecture",
        architecture="resnet18",
    )
    x = torch.rand(4, 1, 32, 32)  # resnet18 at 32×32: small enough to be quick
    model = add_garbage_class(loaded, x[:2], x[2:], [0, 1], epochs=1, batch_size=4)
    path = save(model, tmp_path / "with_garbage.safetensors")
    again = load_model(path)
    assert again.class_names == ("normal", "effusion", "garbage")
    assert again.garbage_class == "garbage"
    with torch.no_grad():
        np.testing.assert_allclose(again.module(x).numpy(), model.module(x).numpy(), atol=1e-5)
