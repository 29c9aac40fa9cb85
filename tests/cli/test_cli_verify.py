"""reference build → verify → report end to end in a subprocess, checked against the in-process backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .helpers import Env, Payload, run_cli


def test_reference_build_verify_and_report(env: Env, bundle: Path, tmp_path: Path) -> None:
    import verification
    from verification.cli import VERDICT_EXIT
    from verification.io.models import load_model
    from verification.reference import load_bundle

    # The bundle fixture ran 'reference build': its two files and nothing else (no staging folder left),
    # with a calibration (one trusted model: bootstrap over images; randomised model as known-bad).
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["ref.json", "ref.npz"]
    built = load_bundle(bundle)
    assert built.counts.tolist() == [3, 3, 3]
    assert built.calibration is not None
    assert "bootstrap" in built.calibration.scheme
    assert built.calibration.bad == ("randomised",)
    assert built.thumbnails is not None
    assert built.thumbnails.shape[0] == 9

    result, table = tmp_path / "out" / "verify.json", tmp_path / "out" / "verify.csv"
    res = run_cli(
        "verify", env.model, env.labelled, "--bundle", bundle, "--labelled", "--json", result, "--csv", table,
        "--batch-size", "4", "--workers", "1",
    )  # fmt: skip
    doc = json.loads(result.read_text())
    assert res.returncode == VERDICT_EXIT[doc["verdict"]], res.stderr
    assert doc["schema"] == "verification.verdict.VerificationReport"
    assert doc["verdict_label"] in res.stdout
    # 3 images per class cannot make anything suitable (20 assessable images per class needed).
    assert doc["verdict"] != "suitable"
    assert [ln["key"] for ln in doc["lines"]] == ["E0", "E1", "E2", "E3", "E4", "E5", "E6"]

    # Parity: the Python API on the same files gives the same numbers.
    model = load_model(env.model)
    paths = [im["name"] for im in doc["images"]]
    labels = [Path(p).parent.name for p in paths]
    api = verification.verify(model, load_bundle(bundle), paths, labels).to_document()
    assert api["verdict"] == doc["verdict"]
    assert api["deciding_line"] == doc["deciding_line"]
    assert [c["verdict"] for c in api["classes"]] == [c["verdict"] for c in doc["classes"]]
    for a_line, c_line in zip(api["lines"], doc["lines"]):
        assert a_line["status"] == c_line["status"]
        for a, c in zip(a_line["per_class"], c_line["per_class"]):
            assert a["status"] == c["status"]
            assert (a["value"] is None) == (c["value"] is None)
            if a["value"] is not None:
                np.testing.assert_allclose(a["value"], c["value"], rtol=1e-4, atol=1e-5)
    for a_im, c_im in zip(api["images"], doc["images"]):
        assert a_im["name"] == c_im["name"]
        assert a_im["predicted"] == c_im["predicted"]
        for key, value in a_im["values"].items():
            if value is None:
                assert c_im["values"][key] is None
            else:
                np.testing.assert_allclose(value, c_im["values"][key], rtol=1e-4, atol=1e-5)

    csv_lines = table.read_text().splitlines()
    assert csv_lines[0].startswith("image,status,label,predicted,probability")
    assert len(csv_lines) == 1 + len(paths)

    html_path = tmp_path / "report.html"
    rendered = run_cli("report", result, "-o", html_path)
    assert rendered.returncode == 0, rendered.stderr
    page = html_path.read_text()
    assert doc["verdict_label"] in page
    assert "E3 reliance on evidence outside the anatomy" in page
    assert page.count("data:image/jpeg;base64,") >= 2  # example maps and their references
    assert "<script" not in page  # no script at all: the file opens offline
    assert '<svg class="band"' in page  # the band charts are inline SVG
    assert "Report made " in page
    pdf_path = tmp_path / "report.pdf"
    assert run_cli("report", result, "--pdf", pdf_path).returncode == 0
    assert pdf_path.read_bytes().startswith(b"%PDF-")


def test_verify_exit_codes_unlabelled_and_bad_bundles(env: Env, bundle: Path, tmp_path: Path) -> None:
    # No labels, no annotations: CANNOT VERIFY (exit 4), saying what is missing; a corrupt file is an error
    # row.
    folder = tmp_path / "with_bad"
    shutil.copytree(env.images, folder)
    (folder / "bad.png").write_bytes(b"not an image")
    res = run_cli(
        "verify", env.model, folder, "--bundle", bundle, "--json", tmp_path / "v.json", "--no-faithfulness"
    )
    doc = json.loads((tmp_path / "v.json").read_text())
    assert res.returncode == 4, res.stderr
    assert doc["verdict"] == "cannot_verify"
    assert any("labels" in m for m in doc["missing"])
    assert [Path(e["image"]).name for e in doc["errors"]] == ["bad.png"]
    assert len(doc["images"]) == 7
    assert "1 unreadable image(s) left out of the verdict" in res.stdout
    assert "CANNOT VERIFY" in res.stdout

    missing = run_cli("verify", env.model, env.images, "--bundle", tmp_path / "nothing")
    assert missing.returncode == 1
    assert "nothing.npz" in missing.stderr
    assert "Traceback" not in missing.stderr

    broken = tmp_path / "broken"
    broken.with_suffix(".json").write_text("{not json")
    broken.with_suffix(".npz").write_bytes(b"")
    res = run_cli("verify", env.model, env.images, "--bundle", broken, "--json", tmp_path / "b.json")
    assert res.returncode == 1
    assert "broken" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "b.json").exists()

    helptext = run_cli("verify", "--help")
    assert "4: CANNOT VERIFY" in helptext.stdout


def test_api_and_cli_give_identical_numbers_on_the_demo(tmp_path: Path) -> None:
    import verification
    from verification import demo
    from verification.io.models import load_model
    from verification.reference import load_bundle

    items = [it for it in demo.demo_images("test") if it.label][:6]
    labelled = tmp_path / "labelled"
    for it in items:
        (labelled / str(it.label)).mkdir(parents=True, exist_ok=True)
        shutil.copy(it.path, labelled / str(it.label) / it.path.name)
    model_path, bundle_path = demo.demo_model_path("sound"), demo.demo_reference_bundle("sound")
    out = tmp_path / "v.json"
    res = run_cli(
        "verify",
        model_path,
        labelled,
        "--labelled",
        "--bundle",
        bundle_path,
        "--json",
        out,
        "--batch-size",
        "3",
    )
    doc = json.loads(out.read_text())
    assert res.returncode == 4, res.stderr  # six images: too few to verify, and the run says so
    paths = [im["name"] for im in doc["images"]]
    api = verification.verify(
        load_model(model_path), load_bundle(bundle_path), paths, [Path(p).parent.name for p in paths]
    ).to_document()
    assert api["verdict"] == doc["verdict"]
    assert api["reason"] == doc["reason"]
    for a, c in zip(api["images"], doc["images"]):
        assert a["name"] == c["name"]
        np.testing.assert_allclose(a["probabilities"], c["probabilities"], rtol=1e-4, atol=1e-6)
        assert a["assessable"] == c["assessable"]
        assert a["values"].keys() == c["values"].keys()
        for key, value in a["values"].items():
            if value is None:
                assert c["values"][key] is None
            else:
                np.testing.assert_allclose(value, c["values"][key], rtol=1e-4, atol=1e-5)
    for a_line, c_line in zip(api["lines"], doc["lines"]):
        assert [x["status"] for x in a_line["per_class"]] == [x["status"] for x in c_line["per_class"]]


def test_a_bad_mask_file_is_its_images_error_row(env: Env, bundle: Path, tmp_path: Path) -> None:
    """An object-array ``<stem>_lesion.npy`` used to end ``verify`` with exit 1 and no report ("error:
    ValueError: Object arrays cannot be loaded ..."); it, and a header declaring 8 GB over 1 KB of data, are
    now their own image's error row naming the file, and the other images (one with a good mask) are
    measured."""
    ann = tmp_path / "ann"
    ann.mkdir()
    np.save(ann / "img00_lesion.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with (ann / "img01_lesion.npy").open("wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (32768,) * 2}
        )
        fh.write(b"\0" * 1024)
    mask = np.zeros((64, 64), np.float32)
    mask[20:40, 20:40] = 1
    np.save(ann / "img04_lesion.npy", mask)
    out = tmp_path / "v.json"
    res = run_cli(
        "verify", env.model, env.images, "--bundle", bundle, "--annotations", ann, "--json", out,
        "--no-faithfulness", "--no-counterfactuals",
        "--no-finding-class", "normal", "--no-finding-class", "clear",
    )  # fmt: skip
    assert res.returncode != 1, res.stderr
    assert "Traceback" not in res.stderr
    doc = json.loads(out.read_text())
    errors = {Path(e["image"]).name: e["error"] for e in doc["errors"]}
    assert sorted(errors) == ["img00.png", "img01.png"]
    assert "img00_lesion.npy" in errors["img00.png"]
    assert "Python objects" in errors["img00.png"]
    assert "img01_lesion.npy" in errors["img01.png"]
    assert "8,589,934,592 bytes" in errors["img01.png"]
    assert len(doc["images"]) == 5
    # the same run also carries --no-finding-class into the verdict's configuration
    assert doc["config"]["no_finding_classes"] == ["normal", "clear"]


def test_trust_covers_only_the_main_model(env: Env, bundle: Path, tmp_path: Path) -> None:
    """``--trust`` used to unpickle every model file of the command (--gate, --healthy, --bad): a pickle given
    as the gate or a healthy model ran its code. Now each other file needs ``--trust-other PATH``; without
    it the file is refused naming that flag, and nothing ran."""
    import pickle

    marker = tmp_path / "executed"
    evil = tmp_path / "gate.pt"
    evil.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    common = ("--trust", "--no-faithfulness", "--no-counterfactuals")
    res = run_cli("verify", env.model, env.images, "--bundle", bundle, "--gate", evil, *common)
    assert res.returncode == 1
    assert f"--trust-other {evil}" in res.stderr
    assert not marker.exists(), "--trust unpickled the --gate file"
    built = run_cli(
        "reference", "build", env.model, env.labelled, "-o", tmp_path / "ref", "--healthy", evil, "--trust"
    )
    assert built.returncode == 1
    assert f"--trust-other {evil}" in built.stderr
    assert not marker.exists(), "--trust unpickled the --healthy file"
    # the explicit opt-in for that one file is honoured (the payload runs, as torch's docs warn)
    run_cli("verify", env.model, env.images, "--bundle", bundle, "--gate", evil, "--trust-other", evil)
    assert marker.exists()
