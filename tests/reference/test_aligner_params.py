"""monst3r_ga parametrisation and loss terms against the official-code fixtures (geometry_helpers.npz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monst3r_fw_reference.aligner.losses import (
    align_sum_autograd, align_sum_fused, ego_flow, ego_motion_maps, flow_sums_autograd, flow_sums_fused,
    masked_smooth_l1_sums, temporal_smoothness,
)
from monst3r_fw_reference.aligner.params import (
    SceneParams, params_from_poses, pixel_grid_flat, poses_from_params, signed_expm1, signed_log1p, world_points,
    world_points_cf,
)
from tests.conftest import shared_path

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def fx() -> dict[str, np.ndarray]:
    with np.load(shared_path("fixtures", "monst3r_parity", "geometry_helpers.npz")) as data:
        return {k: data[k] for k in data.files}


def _t(fx, key):
    return torch.from_numpy(fx[key])


def test_pose_parametrisation(fx):
    c2w = poses_from_params(_t(fx, "pose_params7"))
    np.testing.assert_allclose(c2w.numpy(), fx["pose_c2w_4x4"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(signed_expm1(_t(fx, "pose_params7")[:, 4:7]).numpy(), fx["pose_signed_expm1_of_params"], rtol=RTOL, atol=ATOL)
    back = params_from_poses(c2w)
    q_ref = fx["pose_rotmat_to_unitquat_xyzw"]
    sign = np.sign((back[:, :4].numpy() * q_ref).sum(1, keepdims=True))  # q and -q are the same rotation
    np.testing.assert_allclose(back[:, :4].numpy() * sign, q_ref, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(back[:, 4:].numpy(), fx["pose_signed_log1p_T"], rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(signed_log1p(signed_expm1(back[:, 4:])).numpy(), back[:, 4:].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [False, True])
def test_optimiser_parametrisation(fx, shared):
    h, w = (int(v) for v in fx["optim_imshape_hw"])
    p = SceneParams(3, (h, w), 4, shared_focal=shared)
    with torch.no_grad():
        p.im_logdepth[:] = _t(fx, "optim_param_im_logdepth")
        p.im_poses[:] = _t(fx, "optim_param_im_poses")
        focals = _t(fx, "optim_param_im_log_focals")
        p.im_focals[:] = focals[:1] if shared else focals  # shared: image 0's parameter
        p.im_pp[:] = _t(fx, "optim_param_im_pp")
        p.pw_poses[:] = _t(fx, "optim_param_pw_poses")
        p.pw_adaptors[:] = _t(fx, "optim_param_pw_adaptors")
    sfx = "shared" if shared else "per_image"
    grid = pixel_grid_flat(h, w)
    checks = {
        f"optim_focals_{sfx}": p.focals(), f"optim_intrinsics_{sfx}": p.intrinsics(),
        f"optim_pts3d_world_{sfx}": world_points(p, grid),
        "optim_principal_points": p.principal_points(), "optim_im_poses_c2w": p.world_from_cam(),
        "optim_depthmaps": p.depth(), "optim_pw_scale": p.pw_scale(),
        "optim_pw_poses_scaled": p.pw_world_from_pair(), "optim_pw_adaptors": p.pw_adaptors_xyz(),
    }
    for key, value in checks.items():
        np.testing.assert_allclose(value.detach().numpy(), fx[key], rtol=RTOL, atol=ATOL, err_msg=key)
    cf = world_points_cf(p, grid.t().contiguous()).transpose(1, 2)
    np.testing.assert_allclose(cf.detach().numpy(), fx[f"optim_pts3d_world_{sfx}"], rtol=RTOL, atol=1e-5)
    # temporal smoothness: per consecutive pair, summed by the loss
    c2w = p.world_from_cam()
    per_pair = [float(temporal_smoothness(c2w[k:k + 2].detach(), 1.0)) for k in range(2)]
    np.testing.assert_allclose(per_pair, fx["optim_relative_pose_loss_consecutive"], rtol=1e-5)


def test_ego_flow_matches_official(fx):
    src_r, src_t, tgt_r, tgt_t = (_t(fx, k) for k in ("flow_src_R", "flow_src_t", "flow_tgt_R", "flow_tgt_t"))
    disp = _t(fx, "flow_src_disp")
    b, _, h, w = disp.shape
    grid_h = torch.cat([pixel_grid_flat(h, w).t(), torch.ones(1, h * w)], dim=0)
    c2w = torch.eye(4).repeat(2 * b, 1, 1)
    c2w[:b, :3, :3], c2w[:b, :3, 3] = src_r, src_t[..., 0]
    c2w[b:, :3, :3], c2w[b:, :3, 3] = tgt_r, tgt_t[..., 0]
    k = torch.cat([torch.linalg.inv(_t(fx, "flow_inv_K_src")), _t(fx, "flow_K_tgt")])
    a, bb = ego_motion_maps(c2w, k, torch.arange(b), torch.arange(b) + b)
    flow = ego_flow(a, bb, disp.reshape(b, -1), grid_h).reshape(b, 2, h, w)
    np.testing.assert_allclose(flow.numpy(), fx["flow_ego_flow"][:, :2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("thr,key", [(50.0, "sl1_loss_thre50"), (0.0, "sl1_loss_thre0")])
def test_smooth_l1_matches_official(fx, thr, key):
    s, n = masked_smooth_l1_sums(_t(fx, "sl1_estimate"), _t(fx, "sl1_gt"), _t(fx, "sl1_mask"), thr)
    np.testing.assert_allclose(float(s / n), float(fx[key]), rtol=1e-5)


def test_fused_kernels_match_autograd():
    gen = torch.Generator().manual_seed(0)
    f, p, h, w = 5, 9, 6, 8
    n = h * w
    x = torch.randn(f, 3, n, generator=gen, requires_grad=True)
    m = torch.randn(p, 3, 3, generator=gen, requires_grad=True)
    t = torch.randn(p, 3, generator=gen, requires_grad=True)
    idx = torch.randint(0, f, (p,), generator=gen)
    pred, wgt = torch.randn(p, 3, n, generator=gen), torch.rand(p, n, generator=gen)
    res = []
    for fn in (align_sum_autograd, lambda *a: align_sum_fused(*a, chunk=4)):
        for v in (x, m, t):
            v.grad = None
        val = fn(x, idx, m, t, pred, wgt)
        (3 * val).backward()
        res.append([val.detach(), x.grad.clone(), m.grad.clone(), t.grad.clone()])
    for a_, b_ in zip(*res):
        torch.testing.assert_close(a_, b_, rtol=1e-5, atol=1e-5)

    grid_h = torch.cat([pixel_grid_flat(h, w).t(), torch.ones(1, n)], dim=0)
    disp = (torch.rand(f, n, generator=gen) + 0.5).requires_grad_()
    a = torch.eye(3) + 0.01 * torch.randn(p, 3, 3, generator=gen)
    a[:, 0, 2] += torch.randn(p, generator=gen)
    a.requires_grad_()
    b = (0.3 * torch.randn(p, 3, generator=gen)).requires_grad_()
    src = torch.randint(0, f, (p,), generator=gen)
    obs = 3 * torch.randn(p, 2, n, generator=gen)
    static = torch.rand(f, n, generator=gen) > 0.2
    for thr in (50.0, 1.0, 0.0):
        res = []
        for fn in (flow_sums_autograd, lambda *z: flow_sums_fused(*z, chunk=4)):
            for v in (disp, a, b):
                v.grad = None
            s, c = fn(disp, src, a, b, grid_h, obs, static, thr)
            (s / c).backward()
            res.append([s.detach(), c, disp.grad.clone(), a.grad.clone(), b.grad.clone()])
        for a_, b_ in zip(*res):
            torch.testing.assert_close(a_, b_, rtol=1e-5, atol=1e-6)


def test_kernel_workers_split_fused_kernels_like_intra_op_threads(monkeypatch):
    """kernel_workers(2) around single-threaded ops (the gauss_newton loop) splits the fused kernels into
    the same edge ranges as 2 intra-op threads (the Adam loop), so the sums are bit-identical."""
    import monst3r_fw_reference.aligner.losses as losses

    gen = torch.Generator().manual_seed(1)
    f, p, n = 4, 11, 40
    x = torch.randn(f, 3, n, generator=gen, requires_grad=True)
    m = torch.randn(p, 3, 3, generator=gen, requires_grad=True)
    t = torch.randn(p, 3, generator=gen, requires_grad=True)
    idx = torch.randint(0, f, (p,), generator=gen)
    pred, wgt = torch.randn(p, 3, n, generator=gen), torch.rand(p, n, generator=gen)
    workers = []
    split = losses._edge_ranges
    monkeypatch.setattr(losses, "_edge_ranges", lambda n_, c_, w_: workers.append(w_) or split(n_, c_, w_))

    def run():
        for v in (x, m, t):
            v.grad = None
        val = align_sum_fused(x, idx, m, t, pred, wgt, chunk=2)
        val.backward()
        return [val.detach(), x.grad.clone(), m.grad.clone(), t.grad.clone()]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ref = run()
        with losses.kernel_workers(2), losses._single_threaded_ops():
            assert torch.get_num_threads() == 1
            got = run()
    finally:
        torch.set_num_threads(before)
    assert workers == [2, 2]
    for a_, b_ in zip(ref, got):
        assert torch.equal(a_, b_)
