"""monst3r_ga ``solver: gauss_newton``: IRLS gradients, Schur step, monotone objective, accuracy vs Adam."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from monst3r_framework.stages import RunContext
from monst3r_fw_reference.aligner import MonST3RGAConfig, MonST3RGlobalAligner
from monst3r_fw_reference.aligner.data import FlowLookup, load_problem
from monst3r_fw_reference.aligner.gauss_newton import GaussNewtonSolver
from monst3r_fw_reference.aligner.losses import temporal_smoothness, velocity_smoothness
from monst3r_fw_reference.aligner.optimize import Objective, build_params
from monst3r_fw_reference.aligner.testing import ate_percent, depth_abs_rel, make_case, swinstride_pairs


def _case(n_frames, size_hw, seed=1, **kw):
    synth = pytest.importorskip("monst3r_fw_eval.synth")
    scene = synth.make_scene(n_frames=n_frames, size_hw=size_hw, seed=0, n_objects=1, supersample=1)
    return make_case(scene, swinstride_pairs(n_frames, window=2), depth_noise=0.02, edge_scale_range=2.0,
                     init_rot_deg=2.0, init_trans_frac=0.5, seed=seed, **kw)


def _problem(case, symmetric=True):
    inp = case.inputs
    pairs = np.asarray(inp.predictions.pairs)
    rows = np.arange(len(pairs)) if symmetric else np.flatnonzero(pairs[:, 0] < pairs[:, 1])
    n = len(inp.init.world_from_cam)
    return load_problem(inp, np.arange(n), rows, use_flow=True, lookup=FlowLookup(np.asarray(inp.flow.pairs)),
                        symmetric=symmetric, world_from_cam=inp.init.world_from_cam, intrinsics=inp.init.intrinsics,
                        depth=inp.init.depth)


@pytest.fixture(scope="module")
def tiny():
    return _case(4, (6, 8))


def _solver(case, symmetric=True, **cfg):
    cfg = MonST3RGAConfig(solver="gauss_newton", gn_hessian_pixels=0, **cfg)
    prob = _problem(case, symmetric)
    solver = GaussNewtonSolver(prob, cfg, build_params(prob, cfg))
    # move off the initialisation so that every term has a gradient
    solver.state = solver._tangent(solver.state, {
        "rot": 0.01 * torch.randn(prob.n_frames, 3), "trans": 0.01 * torch.randn(prob.n_frames, 3),
        "logd": 0.02 * torch.randn(prob.n_frames, prob.depth.shape[1]), "logf": torch.full((solver.lay.nf,), 0.01),
        "e_rot": 0.01 * torch.randn(prob.n_edges, 3), "e_trans": 0.01 * torch.randn(prob.n_edges, 3),
        "e_logs": 0.05 * torch.randn(prob.n_edges)}).retract()
    return solver


def _project_sigma(solver, v):
    idx = solver.lay.sigma_cols()
    v = v.clone()
    v[idx] -= v[idx].mean()
    return v


@pytest.mark.parametrize("symmetric,shared", [(True, True), (False, False)])
def test_irls_weights_reproduce_l1_and_smooth_l1_gradients(tiny, symmetric, shared):
    """J^T W r of the IRLS model (L1 point distance -> w/||r||, smooth-L1 flow -> min(1, 1/|e|), elements
    over the pixel threshold dropped) equals autograd's gradient of the objective at the current point."""
    torch.manual_seed(0)
    solver = _solver(tiny, symmetric, smoothness_weight=0.0, shared_focal=shared, flow_loss_start=0.0,
                     flow_loss_threshold=0.0, pixel_threshold=2.0)
    _, values, counts, g = solver.evaluate(solver.state, 10, grad=True)
    assert counts is not None and values[3] > 0  # the flow term is on
    _, _, gc, gd = solver.model.full_system(solver.state, counts)
    want_c = solver.lay.pack(g)
    np.testing.assert_allclose(_project_sigma(solver, gc).numpy(), want_c.numpy(), rtol=2e-3, atol=2e-6 * float(want_c.abs().max()))
    np.testing.assert_allclose(gd.numpy(), g["logd"].double().numpy(), rtol=2e-3, atol=2e-6 * float(g["logd"].abs().max()))


@pytest.mark.parametrize("curvature", [0.0, 0.5])
@pytest.mark.parametrize("pixel_threshold", [50.0, 0.5, 0.3])
def test_schur_step_equals_full_system_step(tiny, curvature, pixel_threshold):
    """Plain IRLS (0) and the L1 norm's curvature with half the IRLS curvature along r removed (0.5);
    flow elements dropped by ``pixel_threshold`` (none at 50; 6 of 660 at 0.5, where the depth pass
    tests |e| < thr + 1/2; 64 at 0.3, where it tests the loss itself) weigh 0 in both systems."""
    torch.manual_seed(1)
    # flow weight 1 (official 0.01) so that every flow coupling, focal ones included, shows in the step
    solver = _solver(tiny, True, smoothness_weight=0.01, flow_loss_start=0.0, flow_loss_threshold=0.0,
                     depth_prior_weight=0.0, flow_loss_weight=1.0, gn_norm_curvature=curvature,
                     pixel_threshold=pixel_threshold)
    st = solver.state
    _, _, counts, g = solver.evaluate(st, 10, grad=True)
    lam = 1e-2
    lin = solver.linearise(st, counts, g)
    step = solver.solve(st, lin, lam, counts)
    # the same damped GN system without elimination: all cameras and depths in one dense matrix
    hfull, _, _, _ = solver.model.full_system(st, counts)
    lay = solver.lay
    k = lay.K
    hfull[:k, :k] = lin["hcc"]  # identical camera block (smoothness included); depth rows/columns from the full build
    grad = torch.cat([lin["gc"], g["logd"].double().reshape(-1)])
    diag = hfull.diagonal().clone()
    cam_d = lin["hcc"].diagonal().clamp_min(1e-12 * float(lin["hcc"].diagonal().abs().max()))
    diag[:k] = cam_d
    a = hfull + lam * torch.diag(diag)
    idx = lay.sigma_cols()
    a[idx, :] -= a[idx, :].mean(0, keepdim=True)
    a[:, idx] -= a[:, idx].mean(1, keepdim=True)
    a[idx[:, None], idx[None, :]] += float(cam_d[idx].mean()) / len(idx)
    x = torch.linalg.solve(a, -grad)
    np.testing.assert_allclose(lay.pack(step).numpy(), x[:k].numpy(), rtol=1e-4, atol=1e-6 * float(x[:k].abs().max()))
    np.testing.assert_allclose(step["logd"].double().reshape(-1).numpy(), x[k:].numpy(), rtol=1e-3,
                               atol=1e-4 * float(x[k:].abs().max()))


def test_steps_never_increase_the_objective():
    case = _case(6, (12, 16), seed=2)
    cfg = MonST3RGAConfig(solver="gauss_newton", flow_loss_start=0.0, gn_iterations=12, gn_tolerance=0.0,
                          gn_hessian_pixels=64)
    prob = _problem(case)
    solver = GaussNewtonSolver(prob, cfg, build_params(prob, cfg))
    hist = solver.run()
    total = hist[:, 0]
    assert len(total) >= 6
    assert np.all(np.diff(total) <= 0)
    assert total[-1] < 0.5 * total[0]


@pytest.fixture(scope="module")
def small():
    return _case(8, (24, 32), seed=1, conf="calibrated")


def test_gauss_newton_matches_adam_accuracy_and_objective(small):
    """Official objective (flow and smoothness on): GN reaches Adam's objective, ATE and depth error."""
    case = small
    init_ate = ate_percent(case.inputs.init.world_from_cam, case.gt_world_from_cam)
    out = {}
    for name, cfg in {"adam": MonST3RGAConfig(iterations=300),
                      "gn": MonST3RGAConfig(solver="gauss_newton")}.items():
        torch.manual_seed(0)
        stage = MonST3RGlobalAligner(cfg)
        rec = stage.run(case.inputs, RunContext())
        out[name] = (rec, ate_percent(rec.world_from_cam, case.gt_world_from_cam), depth_abs_rel(rec.depth, case.gt_depth))
    (rec_a, ate_a, rel_a), (rec_g, ate_g, rel_g) = out["adam"], out["gn"]
    assert init_ate > 1.0 and ate_g < init_ate / 2
    assert ate_g <= 1.1 * ate_a + 0.05 and rel_g <= 1.05 * rel_a + 1e-4
    hist = rec_g.loss_history
    assert hist.shape[1] == 7 and hist[-1, 3] > 0  # the flow term is on at the end
    assert hist[-1, 0] <= rec_a.loss_history[-1, 0] * 1.001


def test_velocity_smoothness_is_zero_for_constant_motion():
    import roma

    step_rot = roma.rotvec_to_rotmat(torch.tensor([0.01, 0.02, -0.01]))
    c2w = torch.eye(4).repeat(5, 1, 1)
    step = torch.eye(4)
    step[:3, :3] = step_rot
    step[:3, 3] = torch.tensor([0.1, 0.0, 0.05])
    for k in range(1, 5):
        c2w[k] = c2w[k - 1] @ step
    assert float(velocity_smoothness(c2w, 1.0)) < 1e-6
    assert float(temporal_smoothness(c2w, 1.0)) > 0.4  # the official term penalises the motion itself
    c2w[4, 0, 3] += 0.1
    assert float(velocity_smoothness(c2w, 1.0)) > 0.09


def test_gauss_newton_rejects_options_it_does_not_solve():
    with pytest.raises(ValidationError, match="optimize_pp"):
        MonST3RGAConfig(solver="gauss_newton", optimize_pp=True)


def test_fast_recipe_changes_only_the_solver():
    from pathlib import Path

    from monst3r_framework.recipe import load_recipe
    from monst3r_framework.registry import build_registry

    repo = Path(__file__).resolve().parents[2]
    reg = build_registry(load_entrypoints=True)
    paper = load_recipe(repo / "recipes" / "paper.yaml", registry=reg)[0].to_dict()["stages"]
    fast = load_recipe(repo / "recipes" / "fast.yaml", registry=reg)[0].to_dict()["stages"]
    assert paper["global_aligner"]["solver"] == "adam"
    changed = {k for k in fast["global_aligner"] if fast["global_aligner"][k] != paper["global_aligner"][k]}
    assert changed == {"solver", "gn_iterations", "gn_tolerance"} - {
        k for k in ("gn_iterations", "gn_tolerance") if fast["global_aligner"][k] == paper["global_aligner"][k]}
    assert fast["global_aligner"]["solver"] == "gauss_newton"
    assert {k: v for k, v in fast.items() if k != "global_aligner"} == {k: v for k, v in paper.items() if k != "global_aligner"}


def _step_ratio(world_from_cam) -> float:
    steps = np.linalg.norm(np.diff(np.asarray(world_from_cam)[:, :3, 3], axis=0), axis=1)
    return float(steps.max() / np.median(steps))


@pytest.fixture(scope="module")
def spiky():
    """8 frames whose initial camera 4 sits 10 median steps off the path, sideways (the pose-solver
    spike of DAVIS car-shadow), plus the usual per-edge noise, scales and a 20% trajectory jitter."""
    import dataclasses

    synth = pytest.importorskip("monst3r_fw_eval.synth")
    scene = synth.make_scene(n_frames=8, size_hw=(12, 16), seed=0, n_objects=1, supersample=1)
    case = make_case(scene, swinstride_pairs(8, window=2), depth_noise=0.02, edge_scale_range=2.0,
                     init_rot_deg=1.0, init_trans_frac=0.2, seed=1, conf="calibrated")
    c2w = np.array(case.inputs.init.world_from_cam, np.float64)
    steps = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1)
    side = np.cross(c2w[4, :3, 2], c2w[5, :3, 3] - c2w[3, :3, 3])
    c2w[4, :3, 3] += 10.0 * np.median(steps) * side / np.linalg.norm(side)
    init = dataclasses.replace(case.inputs.init, world_from_cam=c2w)
    return case, dataclasses.replace(case.inputs, init=init)


def test_gauss_newton_removes_an_initial_spike(spiky):
    """Classical weights (flow 0.5, translation smoothness 0.1): the spike goes, with or without Adam warm-up
    steps (``gn_warmup``), and both runs reach the same objective."""
    case, inputs = spiky
    assert _step_ratio(inputs.init.world_from_cam) > 6.0
    init_ate = ate_percent(inputs.init.world_from_cam, case.gt_world_from_cam)
    final = {}
    for warmup in (0, 20):
        cfg = MonST3RGAConfig(solver="gauss_newton", flow_loss_weight=0.5, translation_weight=0.1, gn_warmup=warmup,
                              gn_tolerance=1e-5)
        torch.manual_seed(0)
        logs = []
        rec = MonST3RGlobalAligner(cfg).run(inputs, RunContext(log=logs.append))
        assert _step_ratio(rec.world_from_cam) < 1.5 * _step_ratio(case.gt_world_from_cam)
        assert ate_percent(rec.world_from_cam, case.gt_world_from_cam) < init_ate / 4
        assert any("20 Adam warm-up steps" in m for m in logs) == (warmup > 0)
        final[warmup] = float(rec.loss_history[-1, 0])
    assert abs(final[0] - final[20]) <= 1e-3 * final[0]


def test_depths_stay_within_the_bound_of_their_frame(small):
    """gn_max_depth_ratio: a trial point's depths are clamped to median * / ratio of their frame."""
    from monst3r_fw_reference.aligner.gauss_newton import bound_depths

    cfg = MonST3RGAConfig(solver="gauss_newton")
    prob = _problem(small)
    solver = GaussNewtonSolver(prob, cfg, build_params(prob, cfg))
    st = solver.state
    st.logd[2, :5] += 30.0  # e^30 x: what LM reaches for a pixel whose optimum is at infinity
    st.logd[3, :5] -= 30.0
    med = st.logd.median(dim=1).values
    out = bound_depths(st, cfg.gn_max_depth_ratio)
    assert cfg.gn_max_depth_ratio == 100.0
    np.testing.assert_allclose((out.logd[2, :5] - med[2]).numpy(), np.log(100.0), rtol=1e-5)
    np.testing.assert_allclose((out.logd[3, :5] - med[3]).numpy(), -np.log(100.0), rtol=1e-5)
    assert float((out.logd - med[:, None]).abs().max()) <= np.log(100.0) + 1e-5
    st.logd[2, :5] += 30.0
    before = st.logd.clone()
    assert torch.equal(bound_depths(st, 0.0).logd, before)  # 0: no bound


# ---- gn_coarse_stride: coarse-to-fine ---------------------------------------------------------


def test_a_pixel_subset_problem_keeps_pixel_coordinates(small):
    """subsample_problem with every pixel in a shuffled order is the same objective (so each pixel is
    evaluated at its own coordinates, not at its index in the subset)."""
    from monst3r_fw_reference.aligner.gauss_newton import subsample_problem

    cfg = MonST3RGAConfig(flow_loss_start=0.0)
    prob = _problem(small)
    params = build_params(prob, cfg)
    perm = torch.randperm(prob.depth.shape[1], generator=torch.Generator().manual_seed(0))
    sub = subsample_problem(prob, perm)
    sub_params = build_params(sub, cfg)
    sub_params.load_state_dict(params.state_dict())
    sub_params.im_logdepth.data[:] = params.im_logdepth.data[:, perm]
    with torch.no_grad():
        want = Objective(prob, params, cfg, 10)(10)[1]
        got = Objective(sub, sub_params, cfg, 10)(10)[1]
    assert want[3] > 0  # the flow term is on
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bilinear_upsampling_reproduces_a_plane():
    from monst3r_fw_reference.aligner.gauss_newton import coarse_pixels, upsample_bilinear

    h, w = 13, 17
    ys, xs, idx = coarse_pixels((h, w), 3)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    plane = (0.5 + 0.1 * yy - 0.03 * xx).reshape(1, -1)
    up = upsample_bilinear(plane[:, idx], ys, xs, (h, w)).reshape(h, w)
    inner = (slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1))
    np.testing.assert_allclose(up[inner].numpy(), plane.reshape(h, w)[inner].numpy(), atol=1e-5)
    assert float((up - plane.reshape(h, w)).abs().max()) > 0.01  # constant beyond the outer samples


def test_pixel_values_sum_to_the_terms_that_depths_enter(small):
    """At fixed cameras the objective is the sum of the per-pixel values plus terms no depth enters."""
    cfg = MonST3RGAConfig(solver="gauss_newton", flow_loss_start=0.0, smoothness_weight=0.0, flow_loss_weight=0.3)
    prob = _problem(small)
    solver = GaussNewtonSolver(prob, cfg, build_params(prob, cfg))
    _, values, counts, _ = solver.evaluate(solver.state, 10, grad=False)
    assert counts is not None and values[3] > 0
    pv = solver.model.pixel_values(solver.state, counts)
    want = values[1] + values[2] + cfg.flow_loss_weight * values[3]
    np.testing.assert_allclose(float(pv.double().sum()), want, rtol=1e-4)


def test_ray_median_minimises_the_alignment_terms_along_the_ray(small):
    """At converged cameras (residuals then lie along the rays: depth noise) the ray median is, pixel by
    pixel, at least as good for the alignment terms as depths 1% nearer or farther."""
    cfg = MonST3RGAConfig(solver="gauss_newton", flow_loss_weight=0.0, gn_tolerance=1e-5)
    prob = _problem(small)
    solver = GaussNewtonSolver(prob, cfg, build_params(prob, cfg))
    solver.run()
    model, st = solver.model, solver.state
    med = dataclasses.replace(st, logd=model.ray_median_logd(st))
    v_med = model.pixel_values(med, None)
    for shift in (-0.03, 0.03):
        v = model.pixel_values(dataclasses.replace(med, logd=med.logd + shift), None)
        assert float((v_med <= v * (1 + 1e-6)).float().mean()) > 0.9


@pytest.fixture(scope="module")
def small_full_solve(small):
    cfg = MonST3RGAConfig(solver="gauss_newton", gn_tolerance=1e-5)
    logs = []
    rec = MonST3RGlobalAligner(cfg).run(small.inputs, RunContext(log=logs.append))
    assert not any("coarse stage" in m for m in logs)
    return rec


@pytest.mark.parametrize("depth_mode", ["interpolate", "ray_median", "ray_mean"])
def test_coarse_to_fine_reaches_the_full_solve(small, small_full_solve, depth_mode):
    """gn_coarse_stride 2: same objective (within 0.05%), ATE and depth error as the full-resolution
    solve; the loss curve holds the coarse rows, then the full-resolution ones (flow term on)."""
    case, full = small, small_full_solve
    cfg = MonST3RGAConfig(solver="gauss_newton", gn_tolerance=1e-5, gn_coarse_stride=2, gn_coarse_depth=depth_mode)
    logs = []
    c2f = MonST3RGlobalAligner(cfg).run(case.inputs, RunContext(log=logs.append))
    ate_1, rel_1 = ate_percent(full.world_from_cam, case.gt_world_from_cam), depth_abs_rel(full.depth, case.gt_depth)
    ate_2, rel_2 = ate_percent(c2f.world_from_cam, case.gt_world_from_cam), depth_abs_rel(c2f.depth, case.gt_depth)
    assert any("coarse stage (every 2th pixel, 192 per frame)" in m for m in logs)
    assert any("ray median depth" in m for m in logs) == (depth_mode == "ray_median")
    assert float(c2f.loss_history[-1, 0]) <= float(full.loss_history[-1, 0]) * 1.0005
    assert ate_2 <= 1.1 * ate_1 + 0.05 and rel_2 <= 1.05 * rel_1 + 1e-4
    assert c2f.loss_history.shape[1] == 7 and c2f.loss_history[-1, 3] > 0
    assert len(c2f.loss_history) > len(full.loss_history) // 2


# ---- gn_free_depth: depths that only the flow term constrains ---------------------------------


def test_free_depths_are_held_where_they_start(small):
    """gn_free_depth hold: pixels with no alignment weight (confidence 1 in every pair view of their frame) keep
    their initial depth exactly; every other depth is solved as with 'solve', where the free ones move."""
    inputs = small.inputs
    pred = inputs.predictions
    pairs = np.asarray(pred.pairs)
    conf_i, conf_j = np.array(pred.conf_i), np.array(pred.conf_j)
    conf_i[pairs[:, 0] == 3, :6] = 1.0  # frame 3's top six rows: log(conf) = 0 in all its views
    conf_j[pairs[:, 1] == 3, :6] = 1.0
    inputs = dataclasses.replace(inputs, predictions=dataclasses.replace(pred, conf_i=conf_i, conf_j=conf_j))
    init = np.asarray(inputs.init.depth, np.float64)
    out, logs = {}, []
    for mode in ("solve", "hold"):
        torch.manual_seed(0)
        cfg = MonST3RGAConfig(solver="gauss_newton", gn_free_depth=mode, flow_loss_weight=0.5, flow_loss_start=0.0)
        rec = MonST3RGlobalAligner(cfg).run(inputs, RunContext(log=logs.append))
        assert rec.run_summary["gn_free_depth"] == mode
        out[mode] = (np.asarray(rec.depth, np.float64), depth_abs_rel(rec.depth, small.gt_depth))
    free = np.zeros(init.shape, bool)
    free[3, :6] = True
    # the run log says how many depths were held: exactly the block without alignment weight
    assert f"gn_free_depth hold keeps {free.mean():.1%} of the depths" in " ".join(logs)
    (d_solve, rel_solve), (d_hold, rel_hold) = out["solve"], out["hold"]
    # held: the initial depths up to the one scale the stage applies to the whole reconstruction
    log_ratio = np.log(d_hold[free] / init[free])
    assert np.ptp(log_ratio) < 1e-5, np.ptp(log_ratio)
    assert np.ptp(np.log(d_solve[free] / init[free])) > 0.02  # 'solve' moves them
    # the constrained depths end where 'solve' puts them (same objective there, up to the held pixels' pull)
    assert np.median(np.abs(d_hold[~free] / d_solve[~free] - 1.0)) < 0.01
    assert rel_hold < rel_solve * 1.2 + 1e-3
