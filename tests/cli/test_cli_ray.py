"""The Ray engine gives the local engine's numbers (local Ray, 2 CPUs) and fails clearly without ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .helpers import Env, run_cli


def test_engine_ray_without_ray_installed_is_a_clear_failure(env: Env, tmp_path: Path) -> None:
    # A 'ray' package that cannot be imported, first on the path: what a machine without ray looks like.
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    from .helpers import ROOT

    res = run_cli(
        "cam", env.model, env.images, "-o", tmp_path / "out", "--engine", "ray",
        env={"PYTHONPATH": f"{tmp_path / 'site'}:{ROOT}"},
    )  # fmt: skip
    assert res.returncode == 1
    assert "--engine ray needs the 'ray' package" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_and_local_engines_give_identical_numbers(env: Env, bundle: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from verification.batch import CamJob, ModelSpec, Row, VerifyJob, scan_images
    from verification.engines import EngineOptions, run_job

    folder = tmp_path / "images"
    shutil.copytree(env.images, folder)
    (folder / "img03_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    paths = scan_images([folder])

    spec = ModelSpec(str(env.model))
    local = EngineOptions(engine="local", batch_size=3, workers=0)
    remote = EngineOptions(engine="ray", batch_size=3, workers=2, ray_num_cpus=2)
    root = str(Path(__file__).resolve().parents[2])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": root}},
    )
    rows: dict[str, list[Row[Any]]] = {}
    try:
        jobs = {
            "cam": lambda: CamJob(spec, methods=("gradcam", "gradcampp", "layercam")),
            "verify": lambda: VerifyJob(spec, str(bundle)),
        }
        for name, make in jobs.items():
            a = list(run_job(make(), paths, local, progress=False))
            b = list(run_job(make(), paths, remote, progress=False))
            rows[name] = a
            assert [r.path for r in a] == [r.path for r in b] == [str(p) for p in paths]
            assert [bool(r.error) for r in a] == [bool(r.error) for r in b]
            assert sum(bool(r.error) for r in a) == 1
            for row_a, row_b in zip(a, b):
                if row_a.error:
                    assert row_a.error == row_b.error
                    assert row_b.result is None
                    continue
                ra, rb = row_a.result, row_b.result
                assert type(ra) is type(rb)  # the Ray engine decodes the job's own frozen record
                if name == "cam":
                    assert ra.pred == rb.pred
                    for key in ra.maps:
                        np.testing.assert_array_equal(ra.maps[key], rb.maps[key])
                        np.testing.assert_array_equal(ra.raw[key], rb.raw[key])
                    np.testing.assert_array_equal(ra.logits, rb.logits)
                else:
                    keys = sorted(ra.values)  # the verdict's per-image quantities (NaN where not measured)
                    assert keys == sorted(rb.values)
                    values = [[r.values[k] for k in keys] for r in (ra, rb)]
                    np.testing.assert_array_equal(values[0], values[1])
                    np.testing.assert_array_equal(ra.map, rb.map)
                    assert ra.predicted == rb.predicted
    finally:
        ray.shutdown()

    # The command line's --engine ray (its own local Ray, started and stopped by the command): the table
    # holds the local engine's values.
    out = tmp_path / "ray.json"
    res = run_cli(
        "verify", env.model, folder, "--bundle", bundle, "--json", out, "--engine", "ray", "--workers", "1",
        "--ray-cpus", "2", "--batch-size", "3", "--quiet",
    )  # fmt: skip
    assert res.returncode == 4, res.stderr  # unlabelled: CANNOT VERIFY, whatever the engine
    assert res.stderr == ""  # Ray started quietly
    doc = json.loads(out.read_text())
    local_ok = [r for r in rows["verify"] if not r.error]
    assert [im["name"] for im in doc["images"]] == [r.path for r in local_ok]
    for image, row in zip(doc["images"], local_ok):
        keys = sorted(row.result.values)
        got = [np.nan if image["values"][k] is None else image["values"][k] for k in keys]
        np.testing.assert_array_equal(np.array(got, dtype=float), [row.result.values[k] for k in keys])
