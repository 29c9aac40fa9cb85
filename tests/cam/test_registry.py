"""The one method registry (issue #16): every method of every kind is registered with its label and what runs
it, runs through ``compute_cams``, and is what the CLI accepts and the dashboard lists."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from verification.cam import compute_attribution, compute_cams
from verification.cam.methods import KINDS, METHODS, list_methods, option_names, register_method
from verification.cam.scorecam import score_cam
from verification.errors import InvalidInputError


class Tiny(nn.Module):
    """conv → ReLU ("act") → conv → ReLU ("act2") → mean pool → linear, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act2(self.conv2(self.act(self.conv(x))))
        return self.fc(h.mean(dim=(2, 3)))


# small settings so that every method runs in well under a second on the tiny model
SMALL = {
    "integrated_gradients": {"n_steps": 4},
    "occlusion": {"window": (4, 4), "stride": (4, 4)},
    "scorecam": {"optimize": False},
}


def test_every_kind_is_registered_with_a_label_and_what_runs_it() -> None:
    assert set(list_methods()) == set(METHODS)
    assert sorted(m for k in KINDS for m in list_methods(k)) == sorted(list_methods())
    for kind in KINDS:
        assert list_methods(kind), f"no method of kind {kind}"
    assert {"saliency", "integrated_gradients", "occlusion"} <= set(list_methods("attribution"))
    assert {"scorecam", "ablationcam"} <= set(list_methods("perturbation"))
    for spec in METHODS.values():
        assert spec.label, spec.name
        assert spec.reference, spec.name
        assert (spec.fn is None) == (spec.kind == "multiscale"), spec.name


@pytest.mark.parametrize("method", list_methods())
def test_every_registered_method_runs_through_compute_cams(method: str) -> None:
    x = torch.rand(2, 3, 8, 8)
    options = {method: SMALL[method]} if method in SMALL else None
    results = compute_cams(
        Tiny(), x, methods=[method], layers="act2", ms_layers=["act", "act2"], options=options
    )
    assert [r.method for r in results] == [method]
    (res,) = results
    expected_layer = {"attribution": "input", "multiscale": "act+act2"}.get(METHODS[method].kind, "act2")
    assert res.layer == expected_layer
    assert res.maps.shape == (2, 8, 8)
    assert np.isfinite(res.maps).all()
    assert res.maps.min() >= 0.0
    assert res.maps.max() <= 1.0
    assert res.provenance["method"] == method


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "occlusion"])
def test_an_attribution_through_compute_cams_equals_compute_attribution(method: str) -> None:
    x = torch.rand(2, 3, 8, 8)
    opts = SMALL.get(method, {})
    (via_cams,) = compute_cams(Tiny(), x, methods=[method], target=[0, 2], options={method: opts})
    direct = compute_attribution(Tiny(), x, method, target=[0, 2], **opts)
    np.testing.assert_array_equal(via_cams.maps, direct.maps)
    np.testing.assert_array_equal(via_cams.raw, direct.raw)
    assert via_cams.targets == direct.targets == (0, 2)


def test_normalize_reaches_methods_that_run_their_own_passes() -> None:
    x = torch.rand(1, 3, 8, 8)
    (res,) = compute_cams(Tiny(), x, methods=["scorecam"], layers="act2", normalize=False)
    own = score_cam(Tiny(), x, "act2", normalize=False)
    np.testing.assert_allclose(res.maps, own.maps, rtol=1e-6)
    assert res.maps.max() > 0
    (sal,) = compute_cams(Tiny(), x, methods=["saliency"], normalize=False)
    assert not np.isclose(sal.maps.max(), 1.0)  # raw Σ|∂y/∂x|, not min-max scaled


def test_options_are_checked_per_method() -> None:
    assert option_names("saliency") == {"normalize"}
    assert "n_steps" in option_names("integrated_gradients")
    assert "n_steps" not in option_names("occlusion")
    with pytest.raises(InvalidInputError, match="occlusion"):
        compute_cams(
            Tiny(), torch.rand(1, 3, 8, 8), methods=["occlusion"], options={"occlusion": {"n_steps": 3}}
        )


def test_a_method_added_in_one_place_is_listed_parsed_and_run() -> None:
    from verification.cli.parser import _methods

    @register_method("test_channel_mean", label="Channel mean", reference="test", needs_gradients=False)
    def channel_mean(a: Tensor, g: Tensor | None = None) -> Tensor:
        return a.mean(dim=1)

    try:
        assert "test_channel_mean" in list_methods("capture")
        assert _methods("gradcam,test-channel-mean") == ("gradcam", "test_channel_mean")
        x = torch.rand(1, 3, 8, 8)
        (res,) = compute_cams(Tiny(), x, methods=["test_channel_mean"], layers="act")
        acts = Tiny().act(Tiny().conv(x)).mean(dim=1)[0].detach().numpy()
        lo, hi = acts.min(), acts.max()
        np.testing.assert_allclose(res.maps[0], (acts - lo) / (hi - lo), atol=1e-6)
        with pytest.raises(ValueError, match="already registered"):
            register_method("test_channel_mean", label="again", reference="test")(channel_mean)
    finally:
        METHODS.pop("test_channel_mean", None)
    with pytest.raises(argparse.ArgumentTypeError, match="saliency"):
        _methods("test_channel_mean")  # gone again; the message lists every registered method
