"""SEA-RAFT (spring-M) parity against ``fixtures/searaft_parity`` (official RAFT2 with tiny weights).

Tolerances are the README's recommendations for a float32 implementation (|a-b| <= atol + rtol|b|).
Each forward batch is run once per module (iters=20, as MonST3R calls it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monst3r_fw_reference.searaft import SeaRaftConfig, load_searaft
from monst3r_fw_reference.searaft.ops import (
    CorrPyramid,
    bilinear_sample,
    convex_upsample,
    coords_grid,
    expected_abs_error,
    laplace_mixture_nll,
    pad_amounts,
    pad_replicate,
    unpad,
)

try:
    from tests.conftest import shared_path
except ImportError:  # plain `pytest` without the repo root on sys.path
    from conftest import shared_path  # type: ignore[no-redef]

ITERS = 20
BATCHES = ("A_landscape", "B_portrait", "C_mult8", "D_padded")
#: (rtol, atol) per fixture key group, from the README.
TOL = {
    "flow_px": (1e-5, 2e-4),
    "head": (1e-5, 5e-5),
    "state": (1e-5, 1e-4),
    "corr": (1e-5, 1e-3),
    "unit": (0.0, 1e-5),
    "f64": (1e-9, 1e-10),
}
KEY_GROUP = {
    "flow_final": "flow_px", "flow_up_all": "flow_px",
    "flow_8x_all": "head", "info_8x_all": "head", "info_up_final": "head", "nf_final_flowgt_zero": "head",
    "flow_head_out_iter0": "head", "flow_head_out_iter1": "head", "delta_flow_iter1": "head",
    "fnet_fmap1": "state", "fnet_fmap2": "state", "cnet_resnetfpn_out": "state", "cnet_net_init": "state",
    "cnet_context": "state", "motion_features_iter1": "state", "net_after_update_iter1": "state",
    "corr_lookup_iter1": "corr",
}


def assert_close(name: str, actual, expected, group: str) -> float:
    """allclose with the group's tolerances; returns the max abs error (for reporting)."""
    rtol, atol = TOL[group]
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    b = np.asarray(expected)
    assert a.shape == b.shape, f"{name}: shape {a.shape} != fixture {b.shape}"
    err = np.abs(a.astype(np.float64) - b.astype(np.float64))
    bound = atol + rtol * np.abs(b.astype(np.float64))
    bad = err > bound
    assert not bad.any(), (
        f"{name}: {int(bad.sum())}/{bad.size} values outside rtol={rtol}, atol={atol}; max abs error {err.max():.3g}"
    )
    return float(err.max())


# --------------------------------------------------------------------------------------------
# Fixture files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small convs: one intra-op thread is ~10x faster than two on the shared CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture(scope="module")
def fx_dir() -> Path:
    folder = shared_path("fixtures", "searaft_parity")
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    for name, entry in manifest.items():
        data = (folder / name).read_bytes()
        assert len(data) == entry["bytes"], f"{name}: size changed"
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{name}: sha256 differs from MANIFEST.json"
    return folder


def test_manifest_covers_every_file(fx_dir: Path) -> None:
    """The sha256 check above runs first; every fixture file is listed (and so checked)."""
    manifest = json.loads((fx_dir / "MANIFEST.json").read_text())
    on_disk = {p.name for p in fx_dir.iterdir() if p.is_file()} - {"MANIFEST.json"}
    assert on_disk == set(manifest)


@pytest.fixture(scope="module")
def model(fx_dir: Path):
    torch.manual_seed(0)
    return load_searaft(fx_dir / "tiny_searaft_spring-M.pth")


@pytest.fixture(scope="module")
def batches(fx_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for name in BATCHES:
        with np.load(fx_dir / f"forward_{name}.npz") as data:
            out[name] = {k: data[k] for k in data.files}
    return out


@pytest.fixture(scope="module")
def runs(model, batches):
    """Our forward on every batch: (output, captured intermediates)."""
    result = {}
    with torch.no_grad():
        for name, d in batches.items():
            cap: dict = {}
            img1, img2 = torch.from_numpy(d["img1"]), torch.from_numpy(d["img2"])
            out = model(img1, img2, iters=ITERS, return_all=True, capture=cap,
                        flow_gt=torch.zeros(img1.shape[0], 2, *img1.shape[-2:]))
            result[name] = (out, cap)
    return result


# --------------------------------------------------------------------------------------------
# Forward batches
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
def test_final_and_per_iteration_flows(batch, runs, batches) -> None:
    out, _ = runs[batch]
    d = batches[batch]
    assert len(out.flow_8x_all) == ITERS + 1  # prediction 0 comes from the context network
    assert_close("flow_final", out.flow, d["flow_final"], "flow_px")
    assert_close("flow_8x_all", torch.stack(out.flow_8x_all), d["flow_8x_all"], "head")
    assert_close("info_8x_all", torch.stack(out.info_8x_all), d["info_8x_all"], "head")
    if "flow_up_all" in d:
        assert_close("flow_up_all", torch.stack(out.flow_all), d["flow_up_all"], "flow_px")
        assert_close("info_up_final", out.info, d["info_up_final"], "head")
        assert_close("nf_final_flowgt_zero", out.nf, d["nf_final_flowgt_zero"], "head")


@pytest.mark.parametrize("batch", BATCHES)
def test_features_context_and_first_update(batch, runs, batches) -> None:
    _, cap = runs[batch]
    d = batches[batch]
    assert tuple(cap["pad_lrtb"]) == tuple(int(v) for v in d["padder_pad_lrtb"])
    for key in ("fnet_fmap1", "fnet_fmap2", "cnet_resnetfpn_out", "cnet_net_init", "cnet_context",
                "flow_head_out_iter0", "motion_features_iter1", "net_after_update_iter1",
                "flow_head_out_iter1", "delta_flow_iter1"):
        assert_close(key, cap[key], d[key], KEY_GROUP[key])
    # Motion features end with the raw 1/8 flow of prediction 0.
    np.testing.assert_array_equal(cap["motion_features_iter1"][:, -2:].numpy(),
                                  runs[batch][0].flow_8x_all[0].numpy())
    if "corr_lookup_iter1" in d:
        assert_close("corr_lookup_iter1", cap["corr_lookup_iter1"], d["corr_lookup_iter1"], "corr")


@pytest.mark.parametrize("batch", BATCHES)
def test_correlation_pyramid(batch, runs, batches) -> None:
    _, cap = runs[batch]
    d = batches[batch]
    levels = cap["corr_pyramid"]
    assert [tuple(lv.shape) for lv in levels] == [tuple(int(v) for v in s) for s in d["corr_pyramid_shapes"]]
    h, w = d["fnet_fmap1"].shape[-2:]
    b, i, j = d["corr_pyramid_query_bxy"].T
    q = b * h * w + i * w + j
    for level in range(4):
        assert_close(f"corr level {level}", levels[level][q, 0], d[f"corr_pyramid_level{level}_rows"], "corr")


def test_lookup_and_first_update_in_isolation(model, batches) -> None:
    """Batch B from the fixture's own tensors: lookup, motion encoder, refinement, heads."""
    d = {k: torch.from_numpy(v) for k, v in batches["B_portrait"].items()}
    pyramid = CorrPyramid(d["fnet_fmap1"], d["fnet_fmap2"], levels=4, radius=4)
    flow0 = d["flow_8x_all"][0]
    corr = pyramid.lookup(coords_grid(*flow0.shape[:1], *flow0.shape[2:], "cpu") + flow0)
    assert corr.dtype == torch.float32 and corr.shape[1] == 324
    assert_close("lookup", corr, d["corr_lookup_iter1"], "corr")
    with torch.no_grad():
        net, motion = model.update_block(d["cnet_net_init"], d["cnet_context"], d["corr_lookup_iter1"], flow0)
        head = model.flow_head(net)
    assert_close("motion", motion, d["motion_features_iter1"], "state")
    assert_close("net", net, d["net_after_update_iter1"], "state")
    assert_close("head", head, d["flow_head_out_iter1"], "head")
    with torch.no_grad():
        head0 = model.flow_head(d["cnet_net_init"])
    assert_close("head0", head0, d["flow_head_out_iter0"], "head")


def test_official_return_conventions(model, batches) -> None:
    d = batches["B_portrait"]
    img1, img2 = torch.from_numpy(d["img1"]), torch.from_numpy(d["img2"])
    with torch.no_grad():
        listed = model.official_call(img1, img2, iters=ITERS, test_mode=True)
        as_dict = model.official_call(img1, img2, iters=ITERS, test_mode=False)
    assert isinstance(listed, list) and len(listed) == 2 and len(listed[0]) == ITERS + 1
    assert listed[1] is listed[0][-1]
    assert_close("[1]", listed[1], d["flow_final"], "flow_px")
    assert set(as_dict) == {"final", "flow", "info", "nf"}
    for a, b in zip(as_dict["flow"], listed[0]):
        assert torch.equal(a, b)
    assert_close("info[-1]", as_dict["info"][-1], d["info_up_final"], "head")
    assert_close("nf[-1]", as_dict["nf"][-1], d["nf_final_flowgt_zero"], "head")


def test_uncertainty_from_info(runs, batches) -> None:
    """uncertainty = sum_j softmax(w)_j * b_j, b0 = exp(clamp(beta0, 0, 10)), b1 = 1 px."""
    out, _ = runs["B_portrait"]
    info = batches["B_portrait"]["info_up_final"].astype(np.float64)
    w = np.exp(info[:, :2] - info[:, :2].max(axis=1, keepdims=True))
    pi = w / w.sum(axis=1, keepdims=True)
    expected = pi[:, 0] * np.exp(np.clip(info[:, 2], 0, 10)) + pi[:, 1] * 1.0
    unc = out.uncertainty()
    assert unc.shape == (1, 192, 128)
    assert_close("uncertainty", unc, expected, "head")
    assert float(unc.min()) >= 1.0 - 1e-6


def test_float64_matches_reference(fx_dir, batches) -> None:
    model64 = load_searaft(fx_dir / "tiny_searaft_spring-M.pth").double()
    d = batches["A_landscape"]
    with torch.no_grad():
        out = model64(torch.from_numpy(d["img1"]).double(), torch.from_numpy(d["img2"]).double(),
                      iters=ITERS, return_all=True)
    assert out.flow.dtype == torch.float64
    assert_close("f64 flow_final", out.flow, d["f64ref_flow_final"], "f64")
    assert_close("f64 flow_8x_all", torch.stack(out.flow_8x_all), d["f64ref_flow_8x_all"], "f64")
    assert_close("f64 info_8x_final", out.info_8x_all[-1], d["f64ref_info_8x_final"], "f64")


# --------------------------------------------------------------------------------------------
# occlusion_mask.npz: the backward flow, and the mask from our own flows
# --------------------------------------------------------------------------------------------


def test_backward_flow_and_occlusion_mask(fx_dir, model, runs, batches) -> None:
    d = batches["A_landscape"]
    with np.load(fx_dir / "occlusion_mask.npz") as occ:
        occ = {k: occ[k] for k in occ.files}
    with torch.no_grad():
        flow_ji = model(torch.from_numpy(d["img2"]), torch.from_numpy(d["img1"]), iters=ITERS).flow
    assert_close("A flow_ji", flow_ji, occ["A_landscape__flow_ji"], "flow_px")
    geometry = pytest.importorskip("monst3r_fw_reference.geometry")
    flow_ij = runs["A_landscape"][0].flow
    h, w = flow_ij.shape[-2:]
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for mine, suffix, f12 in ((geometry.occlusion_mask(flow_ij, flow_ji), "i", flow_ij),
                              (geometry.occlusion_mask(flow_ji, flow_ij), "j", flow_ji)):
        ref = occ[f"A_landscape__valid_mask_{suffix}"]
        # README: with our own flows, flips are allowed only at the threshold or the border.
        near_th = np.abs(occ[f"A_landscape__inconsistency_{suffix}"] - 3.0) <= 1e-3
        tx, ty = xs + f12[:, 0].numpy(), ys + f12[:, 1].numpy()
        near_border = ((np.abs(tx) <= 1e-3) | (np.abs(tx - (w - 1)) <= 1e-3)
                       | (np.abs(ty) <= 1e-3) | (np.abs(ty - (h - 1)) <= 1e-3))[:, None]
        flips = (np.asarray(mine) != ref) & ~(near_th | near_border)
        assert not flips.any(), f"valid_mask_{suffix}: {int(flips.sum())} unexplained flips"


# --------------------------------------------------------------------------------------------
# unit_ops.npz
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unit(fx_dir) -> dict[str, torch.Tensor]:
    with np.load(fx_dir / "unit_ops.npz") as data:
        return {k: torch.from_numpy(data[k]) for k in data.files}


def test_unit_corr_block(unit) -> None:
    radius = int(unit["corr_radius"])
    pyramid = CorrPyramid(unit["corr_fmap1"], unit["corr_fmap2"], levels=4, radius=radius)
    for level in range(4):
        assert_close(f"level {level}", pyramid.levels[level], unit[f"corr_pyramid_level{level}"], "unit")
    assert_close("lookup", pyramid.lookup(unit["corr_coords"]), unit["corr_lookup"], "unit")


def test_unit_convex_upsampling(unit) -> None:
    mask = unit["upsample_mask"]
    assert_close("flow up", convex_upsample(8 * unit["upsample_flow_8x"], mask), unit["upsample_flow_up"], "unit")
    assert_close("info up", convex_upsample(unit["upsample_info_8x"], mask), unit["upsample_info_up"], "unit")


def test_unit_padder(unit) -> None:
    x = unit["padder_input"]
    lrtb = pad_amounts(*x.shape[-2:])
    assert lrtb == tuple(int(v) for v in unit["padder_pad_lrtb"])
    padded = pad_replicate(x, lrtb)
    assert_close("padded", padded, unit["padder_padded"], "unit")
    assert_close("unpadded", unpad(padded, lrtb), unit["padder_unpadded"], "unit")


def test_unit_bilinear_sampler(unit) -> None:
    assert_close("sampler", bilinear_sample(unit["sampler_img"], unit["sampler_coords_xy"]), unit["sampler_out"], "unit")


def test_laplace_nll_formula() -> None:
    """nf = -log sum_j pi_j exp(-e/b_j) / (2 b_j), checked in float64 against a direct evaluation."""
    gen = torch.Generator().manual_seed(3)
    flow, gt = torch.randn(2, 2, 4, 5, generator=gen, dtype=torch.float64) * 3, torch.randn(2, 2, 4, 5, generator=gen, dtype=torch.float64)
    info = torch.randn(2, 4, 4, 5, generator=gen, dtype=torch.float64) * 2
    pi = torch.softmax(info[:, :2], 1)
    b = torch.stack([info[:, 2].clamp(0, 10).exp(), torch.ones_like(info[:, 3])], 1)
    e = (gt - flow).abs()
    direct = -torch.log(sum(pi[:, j:j + 1] * torch.exp(-e / b[:, j:j + 1]) / (2 * b[:, j:j + 1]) for j in range(2)))
    torch.testing.assert_close(laplace_mixture_nll(flow, info, gt), direct, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(expected_abs_error(info), (pi * b).sum(1), rtol=1e-12, atol=1e-12)


def test_too_small_input_is_a_clear_error(model) -> None:
    from monst3r_framework.errors import InputError

    img = torch.zeros(1, 3, 64, 96)
    with pytest.raises(InputError, match="128"):
        model(img, img, iters=1)
    # 121 pads to 128: accepted.
    ok = torch.full((1, 3, 121, 128), 100.0)
    assert model(ok, ok, iters=1).flow.shape == (1, 2, 121, 128)


def test_config_matches_tiny_raft_config(fx_dir, model) -> None:
    assert model.cfg == SeaRaftConfig.from_json(fx_dir / "tiny_raft_config.json")
