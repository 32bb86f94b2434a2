"""The plugin-authoring example (docs/examples/monst3r_fw_spynet): packaging, discovery, accuracy, use.

The example is not installed into the test environment: its folder goes on ``sys.path`` and it is
loaded through a recipe's ``plugins:`` key, while its entry-point metadata is checked separately
(parsed from its pyproject, and exercised through a generated ``.dist-info`` so that
``importlib.metadata`` discovers it exactly as it would after ``pip install``).
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO_ROOT, shared_path
from monst3r_framework.errors import InputError
from monst3r_framework.registry import build_registry
from monst3r_framework.runner import run_pipeline
from monst3r_framework.stages import FlowField, PairPredictions, RunContext
from monst3r_framework.store import RunStore
from monst3r_fw_eval.synth import make_scene

EXAMPLE = REPO_ROOT / "docs" / "examples" / "monst3r_fw_spynet"
TOY_DIR = REPO_ROOT / "tests" / "core"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

from monst3r_fw_spynet.stage import WEIGHTS_ENV, SPyNetConfig, SPyNetFlow  # noqa: E402
from monst3r_fw_spynet.t7 import T7FormatError, load_t7  # noqa: E402


def read_flo(path: Path) -> np.ndarray:
    """Middlebury .flo -> (H, W, 2) float32 (u, v)."""
    raw = np.fromfile(path, np.float32)
    assert raw[0] == np.float32(202021.25), f"{path}: bad .flo magic"
    w, h = raw[1:3].view(np.int32)
    return raw[3:].reshape(int(h), int(w), 2)


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    return shared_path("data", "spynet", "models")


@pytest.fixture(scope="module")
def spynet(weights_dir) -> SPyNetFlow:
    stage = SPyNetFlow(SPyNetConfig(weights=str(weights_dir)))
    stage.setup(RunContext())
    return stage


# ------------------------------------------------------------------------------ packaging


def test_pyproject_declares_the_monst3r_fw_entry_point():
    data = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    project = data["project"]
    assert project["name"] == "monst3r-fw-spynet"
    assert any(dep.startswith("monst3r-fw") for dep in project["dependencies"])
    eps = project["entry-points"]["monst3r_fw"]
    assert eps == {"spynet": "monst3r_fw_spynet.plugin"}
    assert data["tool"]["setuptools"]["packages"]["find"]["include"] == ["monst3r_fw_spynet*"]
    module = importlib.import_module(eps["spynet"])
    assert [c.name for c in module.monst3r_fw_stage_classes()] == ["spynet"]
    # no weights in the package, ever (non-commercial licence)
    assert not [p for p in EXAMPLE.rglob("*") if p.suffix in {".t7", ".pth", ".pt", ".safetensors", ".ckpt"}]


def test_installed_entry_point_is_discovered_and_attributed_to_its_package(tmp_path, monkeypatch, installed_plugins):
    """What `pip install` writes (dist-info with entry_points.txt), generated from the pyproject."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    dist = tmp_path / f"monst3r_fw_spynet-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = [f"{name} = {target}" for name, target in project["entry-points"]["monst3r_fw"].items()]
    (dist / "entry_points.txt").write_text("[monst3r_fw]\n" + "\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    registry = build_registry(load_entrypoints=True)
    entry = registry.get("flow_estimator", "spynet")
    assert entry.plugin == "spynet"
    assert entry.distribution == f"monst3r-fw-spynet {project['version']}"
    assert entry.cls is SPyNetFlow

    from typer.testing import CliRunner

    from monst3r_framework.cli import app

    result = CliRunner().invoke(app, ["plugins", "--no-fields"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if " spynet " in line)
    assert "monst3r-fw-spynet 0.1.0" in row


def test_recipe_plugins_key_loads_the_example(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "schema": 1, "plugins": ["monst3r_fw_spynet.plugin"],
        "stages": {"flow_estimator": {"type": "spynet", "weights": "/w", "levels": 4},
                   "pair_predictor": {"type": "flow_triangulation"}, "pose_solver": {"type": "pnp_mst"},
                   "exporters": [{"type": "summary"}]}}))
    from monst3r_framework.recipe import load_recipe

    # the real path: installed entry points (the reference plugin) + the recipe's plugins: key
    resolved, registry = load_recipe(recipe, overrides=["stages.flow_estimator.levels=5"])
    cfg = resolved.stages["flow_estimator"]
    assert isinstance(cfg, SPyNetConfig) and cfg.weights == "/w" and cfg.levels == 5
    assert registry.get("flow_estimator", "spynet").distribution == "local module"
    assert registry.get("flow_estimator", "opencv_dis").plugin == "reference"


# ------------------------------------------------------------------------------ weights and errors


def test_weights_come_from_config_or_environment(weights_dir, monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(InputError, match=r"stages\.flow_estimator\.weights"):
        SPyNetFlow(SPyNetConfig()).setup(RunContext())
    with pytest.raises(InputError, match="modelL1_F.t7"):
        SPyNetFlow(SPyNetConfig(weights=str(tmp_path))).setup(RunContext())
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_dir))
    stage = SPyNetFlow(SPyNetConfig(levels=2))
    stage.setup(RunContext())
    assert len(stage.model.nets) == 2


def test_t7_reader(weights_dir, tmp_path):
    seq = load_t7(weights_dir / "modelL1_F.t7")
    convs = [m for _, m in sorted(seq.fields["modules"].items()) if "weight" in m.fields]
    assert seq.torch_class == "nn.Sequential"
    assert [c.fields["weight"].shape for c in convs] == [(32, 8, 7, 7), (64, 32, 7, 7), (32, 64, 7, 7),
                                                        (16, 32, 7, 7), (2, 16, 7, 7)]
    assert sum(c.fields["weight"].size + c.fields["bias"].size for c in convs) == 240_050
    truncated = tmp_path / "bad.t7"
    truncated.write_bytes((weights_dir / "modelL1_F.t7").read_bytes()[:5000])
    with pytest.raises(T7FormatError, match=r"end of (the )?file"):
        load_t7(truncated)


# ------------------------------------------------------------------------------ accuracy


def test_end_point_error_on_flyingchairs(spynet, capsys):
    samples = shared_path("data", "spynet", "samples")
    epe, zero = [], []
    for k in (1, 2, 3):
        img1, img2 = read_rgb(samples / f"{k:05d}_img1.ppm"), read_rgb(samples / f"{k:05d}_img2.ppm")
        gt = read_flo(samples / f"{k:05d}_flow.flo")
        flow, unc = spynet.estimate(img1[None], img2[None], RunContext())
        assert flow.shape == (1, *gt.shape) and flow.dtype == np.float32 and unc is None
        epe.append(float(np.linalg.norm(flow[0] - gt, axis=-1).mean()))
        zero.append(float(np.linalg.norm(gt, axis=-1).mean()))
    with capsys.disabled():
        print(f"\nSPyNet EPE on FlyingChairs 00001-00003: {np.round(epe, 3).tolist()} (mean {np.mean(epe):.3f} px; "
              f"zero flow {np.round(zero, 3).tolist()})")
    assert np.mean(epe) <= 2.0
    assert all(e < 0.7 * z for e, z in zip(epe, zero))


def test_any_frame_size_is_resized_and_rescaled(spynet):
    """A pure translation by (3, -2) px on a 50 x 70 crop (not a multiple of 16)."""
    img = read_rgb(shared_path("data", "spynet", "samples") / "00001_img1.ppm")
    a, b = img[100:150, 100:170], img[102:152, 97:167]  # b(x, y) = a(x - 3, y + 2)
    flow, _ = spynet.estimate(a[None], b[None], RunContext())
    inner = flow[0, 8:-8, 8:-8]
    np.testing.assert_allclose(np.median(inner.reshape(-1, 2), axis=0), [3.0, -2.0], atol=0.5)


# ------------------------------------------------------------------------------ in a pipeline


def test_pipeline_with_spynet_swapped_in(weights_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TOY_DIR))  # toy pose/mask/export stages keep the run tiny
    scene = make_scene(n_frames=4, size_hw=(64, 96), seed=3, n_objects=1, motion_scale=3.0)  # ~1-2 px flow
    scene.save(tmp_path / "scene", video=False)
    recipe = tmp_path / "spynet.yaml"
    recipe.write_text(yaml.safe_dump({
        "schema": 1,
        "plugins": ["monst3r_fw_spynet.plugin", "toy_plugin"],
        "input": {"long_edge": 96},
        "pairs": {"scene_graph": "swin-2-noncyclic", "symmetrize": True},
        "device": "cpu",
        "stages": {
            "flow_estimator": {"type": "spynet", "weights": str(weights_dir)},
            "pair_predictor": {"type": "flow_triangulation"},
            "pose_solver": {"type": "toy_pose"},
            "mask_builder": {"type": "toy_mask"},
            "global_aligner": {"type": "toy_aligner", "enabled": False},
            "exporters": [{"type": "toy_export"}],
        },
    }))
    store = str(tmp_path / "store.zarr")
    res = run_pipeline(recipe, tmp_path / "scene" / "frames", tmp_path / "out", store=store)
    assert res.frames.size_hw == (64, 96)
    keys = {r.kind: r.key for r in res.reports}
    with RunStore(store, lock=False) as st:
        assert st.stage_attrs("flow_estimator", keys["flow_estimator"])["type"] == "spynet"
        flow = st.load("flow_estimator", keys["flow_estimator"], FlowField)
        preds = st.load("pair_predictor", keys["pair_predictor"], PairPredictions)
        pairs = np.asarray(flow.pairs)
        for p, (i, j) in enumerate(pairs):
            seen = scene.covisible(i, j)
            err = np.linalg.norm(np.asarray(flow.flow_ij[p]) - scene.flow(i, j), axis=-1)[seen].mean()
            assert err < 0.35 * np.linalg.norm(scene.flow(i, j), axis=-1)[seen].mean(), (i, j, err)
        # the weight-free pair predictor turned SPyNet's flow into depth that follows the scene's
        pp = np.asarray(preds.pairs)
        p = int(np.flatnonzero((pp[:, 0] == 0) & (pp[:, 1] == 2))[0])
        static = ~scene.dynamic_mask[0] & scene.covisible(0, 2) & (np.asarray(preds.conf_i[p]) > 2.0)
        z = np.asarray(preds.pts3d_i[p])[..., 2][static]
        assert np.corrcoef(z, scene.depth[0][static])[0, 1] > 0.9
    depth = np.load(tmp_path / "out" / "toy_export" / "depth.npy")
    assert depth.shape == (4, 64, 96) and np.isfinite(depth).all()

    # swapping the flow model back by an override recomputes flow and what reads it, nothing else
    again = run_pipeline(recipe, tmp_path / "scene" / "frames", tmp_path / "out2", store=store,
                         overrides=["stages.flow_estimator.type=opencv_dis"])
    computed = [r.kind for r in again.reports if not r.cached]
    assert computed == ["flow_estimator", "pair_predictor", "pose_solver", "exporter"]
