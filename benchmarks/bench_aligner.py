"""Benchmark of the ``monst3r_ga`` global aligner: speed, peak memory and accuracy.

Sections (each prints a table; run one at a time on a busy machine):

* ``speed``: seconds per iteration before / after the flow loss starts, iterations/s and peak RSS
  (CUDA peak too when --device cuda) for F frames at HxW, swinstride-5 pairs (symmetrised).
  Each configuration runs in a fresh subprocess so the RSS peak is its own.
* ``accuracy``: ATE (% of the path length, Sim(3) Umeyama) and depth Abs Rel (median scaled) on a
  synthetic scene (monst3r_fw_eval.synth, one moving object) fed GT pair pointmaps with 2%
  multiplicative depth noise, a random scale per edge (log-uniform in [1/2, 2]) and GT flow;
  rows with the flow / smoothness terms on and off (any config via --configs JSON list).
* ``windowed``: batched vs windowed on the same synthetic inputs (ATE, time, peak RSS).
* ``solver``: Adam-300 against ``solver: gauss_newton`` on the accuracy inputs (calibrated
  confidence, 2% depth noise plus a 2% smooth per-edge depth warp, random edge scales, exact flow;
  1 or 2 moving objects): final objective (the same official objective evaluated at both results),
  time to reach Adam-300's objective, wall time, peak RSS, ATE, AbsRel. Each run is its own
  subprocess (own peak RSS); ``--adam-iters N`` times N Adam steps and extrapolates to 300 (then
  Adam's objective/ATE are not reported).

Examples:
    python benchmarks/bench_aligner.py speed --frames 10 30 60 120 --size 128 224 --iters 12
    python benchmarks/bench_aligner.py accuracy --frames 30 --size 128 224
    python benchmarks/bench_aligner.py windowed --frames 30 60 120 --size 64 112
    python benchmarks/bench_aligner.py solver --frames 30 60 --size 144 256 --objects 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _case(frames: int, size_hw: tuple[int, int], seed: int = 0, **kw):
    from monst3r_fw_eval.synth import make_scene
    from monst3r_fw_reference.aligner.testing import make_case, swinstride_pairs

    scene = make_scene(n_frames=frames, size_hw=size_hw, seed=seed, n_objects=1, supersample=1)
    return make_case(scene, swinstride_pairs(frames), seed=seed, **kw)


def _random_inputs(frames: int, size_hw: tuple[int, int], seed: int = 0):
    """Inputs with realistic shapes and value ranges but no scene (for speed/memory only)."""
    from monst3r_framework.stages import (AlignerInputs, CameraTrajectory, DynamicMasks, FlowField, FrameSet,
                                          PairPredictions)
    from monst3r_fw_reference.aligner.testing import swinstride_pairs

    rng = np.random.default_rng(seed)
    h, w = size_hw
    pairs = swinstride_pairs(frames)
    p = len(pairs)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    f = 0.9 * max(h, w)
    depth = (2 + rng.random((frames, h, w), dtype=np.float32))
    def pts(d):
        return np.stack([(xs - w / 2) / f * d, (ys - h / 2) / f * d, d], -1)
    pi = np.empty((p, h, w, 3), np.float32)
    pj = np.empty((p, h, w, 3), np.float32)
    for e, (i, j) in enumerate(pairs):
        pi[e] = pts(depth[i])
        pj[e] = pts(depth[j]) + np.float32(0.01 * (j - i))
    conf = (1.5 + rng.random((p, h, w), dtype=np.float32))
    flow = (rng.standard_normal((p, h, w, 2)).astype(np.float32))
    c2w = np.repeat(np.eye(4)[None], frames, 0)
    c2w[:, 0, 3] = 0.02 * np.arange(frames)
    k = np.repeat(np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])[None], frames, 0)
    fs = FrameSet(rgb=np.zeros((frames, h, w, 3), np.uint8), frame_index=np.arange(frames),
                  timestamps=np.arange(frames) / 10.0, original_hw=(h, w),
                  network_from_original=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    dyn = np.zeros((frames, h, w), bool)
    dyn[:, h // 3: h // 2, w // 3: w // 2] = True
    return AlignerInputs(
        frames=fs, predictions=PairPredictions(pairs=pairs, pts3d_i=pi, pts3d_j=pj, conf_i=conf, conf_j=conf.copy()),
        init=CameraTrajectory(world_from_cam=c2w, intrinsics=k, depth=depth, conf=np.full(depth.shape, 2.0, np.float32)),
        flow=FlowField(pairs=pairs, flow_ij=flow, flow_ji=flow.copy()), masks=DynamicMasks(dynamic=dyn))


def _speed_one(frames: int, h: int, w: int, iters: int, impl: str, device: str) -> dict:
    import torch
    from monst3r_framework.stages import RunContext
    from monst3r_fw_reference.aligner.data import FlowLookup, load_problem
    from monst3r_fw_reference.aligner.config import MonST3RGAConfig
    from monst3r_fw_reference.aligner.optimize import Objective, build_params

    inp = _random_inputs(frames, (h, w))
    pairs = np.asarray(inp.predictions.pairs)
    t0 = time.perf_counter()
    prob = load_problem(inp, np.arange(frames), np.arange(len(pairs)), use_flow=True, lookup=FlowLookup(pairs),
                        symmetric=True, world_from_cam=inp.init.world_from_cam, intrinsics=inp.init.intrinsics,
                        depth=inp.init.depth)
    del inp
    cfg = MonST3RGAConfig(implementation=impl)
    params = build_params(prob, cfg)
    t_setup = time.perf_counter() - t0
    obj = Objective(prob, params, cfg, 300)
    opt = torch.optim.Adam([t for t in params.parameters() if t.requires_grad], lr=0.01, betas=(0.9, 0.9))

    cpu: dict[int, list[float]] = {1: [], 299: []}

    def step(it: int) -> float:
        t, c = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss, _ = obj(it)
        loss.backward()
        opt.step()
        cpu.setdefault(it, []).append(time.process_time() - c)
        return time.perf_counter() - t

    step(0)  # warm-up
    pre = [step(1) for _ in range(iters)]
    post = [step(299) for _ in range(iters)]
    s_pre, s_post = float(np.median(pre)), float(np.median(post))
    cpu_pre, cpu_post = float(np.median(cpu[1])), float(np.median(cpu[299]))
    total_300 = 30 * s_pre + 270 * s_post  # flow starts at 10 % of 300 iterations
    return dict(frames=frames, hw=f"{h}x{w}", pairs=int(len(pairs)), impl=impl, threads=torch.get_num_threads(),
                s_per_it_pre_flow=s_pre, s_per_it_flow=s_post, it_per_s=300 / total_300, est_300_it_s=total_300,
                setup_s=t_setup, peak_rss_mb=_peak_rss_mb(), cpu_s_per_it_pre_flow=cpu_pre, cpu_s_per_it_flow=cpu_post,
                cpu_est_300_it_s=30 * cpu_pre + 270 * cpu_post)


def cmd_speed(args) -> None:
    rows = []
    for size in args.sizes:
        h, w = size
        for f in args.frames:
            for impl in args.impl:
                cmd = [sys.executable, __file__, "_speed_one", str(f), str(h), str(w), str(args.iters), impl, args.device]
                out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if out.returncode != 0:
                    print(f"{f} frames {h}x{w} {impl}: failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{row['frames']:4d} fr {row['hw']:>8s} {row['pairs']:5d} pairs {impl:8s} thr={row['threads']} "
                      f"pre-flow {row['s_per_it_pre_flow']:.3f} s/it  flow {row['s_per_it_flow']:.3f} s/it  "
                      f"{row['it_per_s']:.2f} it/s  300 it ~{row['est_300_it_s']:.0f} s (CPU time {row['cpu_est_300_it_s']:.0f} s)  "
                      f"peak RSS {row['peak_rss_mb']:.0f} MB",
                      flush=True)


def _accuracy_one(case, **cfg) -> dict:
    import torch
    from monst3r_framework.stages import RunContext
    from monst3r_fw_reference.aligner import MonST3RGAConfig, MonST3RGlobalAligner
    from monst3r_fw_reference.aligner.testing import ate_percent, depth_abs_rel

    torch.manual_seed(0)
    t = time.perf_counter()
    rec = MonST3RGlobalAligner(MonST3RGAConfig(**cfg)).run(case.inputs, RunContext())
    dt = time.perf_counter() - t
    return dict(cfg=cfg, seconds=dt, ate=ate_percent(rec.world_from_cam, case.gt_world_from_cam),
                absrel=depth_abs_rel(rec.depth, case.gt_depth),
                focal_err=float(rec.intrinsics[0, 0, 0] / case.gt_K[0, 0] - 1))


def cmd_accuracy(args) -> None:
    from monst3r_fw_reference.aligner.testing import ate_percent, depth_abs_rel

    for f in args.frames:
        case = _case(f, tuple(args.size), depth_noise=args.depth_noise, edge_scale_range=args.scale_range,
                     conf=args.conf if args.conf == "calibrated" else float(args.conf), depth_warp=args.depth_warp)
        print(f"{f} frames {args.size[0]}x{args.size[1]}: init ATE {ate_percent(case.inputs.init.world_from_cam, case.gt_world_from_cam):.3f} %, "
              f"init AbsRel {depth_abs_rel(case.inputs.init.depth, case.gt_depth):.4f}", flush=True)
        for cfg in json.loads(args.configs):
            r = _accuracy_one(case, **cfg)
            print(f"  {json.dumps(cfg):70s} ATE {r['ate']:.3f} %  AbsRel {r['absrel']:.4f}  focal err {100 * r['focal_err']:+.2f} %  "
                  f"{r['seconds']:.0f} s", flush=True)


def _windowed_one(frames: int, h: int, w: int, mode: str, cfg_json: str) -> dict:
    cfg = json.loads(cfg_json)
    case = _case(frames, (h, w))
    base = _peak_rss_mb()
    r = _accuracy_one(case, mode=mode, **cfg)
    r.update(frames=frames, mode=mode, peak_rss_mb=_peak_rss_mb(), rss_before_mb=base)
    return r


def cmd_windowed(args) -> None:
    h, w = args.size
    for f in args.frames:
        for mode in ("batched", "windowed"):
            cmd = [sys.executable, __file__, "_windowed_one", str(f), str(h), str(w), mode, args.config]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if out.returncode != 0:
                print(f"{f} frames {mode}: failed: {out.stderr.strip().splitlines()[-3:]}", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{f:4d} frames {h}x{w} {mode:8s} ATE {r['ate']:.3f} %  AbsRel {r['absrel']:.4f}  {r['seconds']:.0f} s  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB (inputs+scene before the stage: {r['rss_before_mb']:.0f} MB)", flush=True)


def _solver_one(frames: int, h: int, w: int, objects: int, solver: str, cfg_json: str, adam_iters: int,
                target: float, threads: int) -> dict:
    import torch
    from monst3r_fw_eval.synth import make_scene
    from monst3r_fw_reference.aligner.config import MonST3RGAConfig
    from monst3r_fw_reference.aligner.data import FlowLookup, load_problem
    from monst3r_fw_reference.aligner.gauss_newton import GaussNewtonSolver, coarse_to_fine
    from monst3r_fw_reference.aligner.optimize import Objective, build_params, optimise
    from monst3r_fw_reference.aligner.testing import ate_percent, depth_abs_rel, make_case, swinstride_pairs

    if threads > 0:
        torch.set_num_threads(threads)
    scene = make_scene(n_frames=frames, size_hw=(h, w), seed=0, n_objects=objects, supersample=1)
    case = make_case(scene, swinstride_pairs(frames), seed=0, conf="calibrated", depth_noise=0.02, depth_warp=0.02)
    inp = case.inputs
    pairs = np.asarray(inp.predictions.pairs)
    prob = load_problem(inp, np.arange(frames), np.arange(len(pairs)), use_flow=True, lookup=FlowLookup(pairs),
                        symmetric=True, world_from_cam=inp.init.world_from_cam, intrinsics=inp.init.intrinsics,
                        depth=inp.init.depth)
    extra = json.loads(cfg_json)
    cfg = MonST3RGAConfig(solver=solver, **extra)
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU seconds of this process (all threads): comparable across loads
    params = build_params(prob, cfg)
    out: dict = dict(frames=frames, hw=f"{h}x{w}", objects=objects, solver=solver, pairs=int(len(pairs)),
                     threads=torch.get_num_threads(), cfg=extra)
    if solver == "adam" and adam_iters and adam_iters < cfg.iterations:
        # time a few steps before and after the flow start, extrapolate to the full schedule
        obj = Objective(prob, params, cfg, cfg.iterations)
        opt = torch.optim.Adam([t for t in params.parameters() if t.requires_grad], lr=cfg.lr, betas=(0.9, 0.9))
        def step(it: int) -> tuple[float, float]:
            t, c = time.perf_counter(), time.process_time()
            opt.zero_grad(set_to_none=True)
            loss, _ = obj(it)
            loss.backward()
            opt.step()
            return time.perf_counter() - t, time.process_time() - c
        step(0)
        pre = np.median([step(1) for _ in range(adam_iters)], axis=0)
        post = np.median([step(cfg.iterations - 1) for _ in range(adam_iters)], axis=0)
        n_pre = int(cfg.iterations * cfg.flow_loss_start)
        total = n_pre * pre + (cfg.iterations - n_pre) * post
        out.update(seconds=float(total[0]), cpu_seconds=float(total[1]), extrapolated=True,
                   s_per_it=[float(pre[0]), float(post[0])])
        out["peak_rss_mb"] = _peak_rss_mb()
        return out
    if solver == "gauss_newton":
        first = 0  # rows of the full-resolution objective from here on
        if cfg.gn_coarse_stride > 1:  # the coarse stage's rows hold values of the subset objective
            hist, times, first = coarse_to_fine(prob, cfg, params)
        else:
            gn = GaussNewtonSolver(prob, cfg, params)
            hist = gn.run()
            times = gn.times
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        reach = [t for t, v in zip(times[first:], hist[first:, 0]) if v <= target and hist[-1, 3] > 0] if target > 0 else []
        out.update(iterations=len(hist) - 1, coarse_rows=first,
                   time_to_target=(reach[0] + (seconds - times[-1]) if reach else None))
    else:
        params, hist = optimise(prob, cfg, params)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
    with torch.no_grad():
        final = Objective(prob, params, cfg, 1)(10)[1]  # the full objective (flow on) at the result
        c2w = params.world_from_cam().double().numpy()
        depth = params.depth().reshape(frames, h, w).numpy()
    out.update(seconds=seconds, cpu_seconds=cpu, objective=final[0], terms=final, peak_rss_mb=_peak_rss_mb(), rss_before_mb=rss0,
               ate=ate_percent(c2w, case.gt_world_from_cam), absrel=depth_abs_rel(depth, case.gt_depth),
               init_ate=ate_percent(inp.init.world_from_cam, case.gt_world_from_cam))
    return out


def cmd_solver(args) -> None:
    h, w = args.size
    print(f"load {os.getloadavg()}", flush=True)
    for objects in args.objects:
        for f in args.frames:
            rows = {}
            for solver in ("adam", "gauss_newton"):
                if solver == "adam" and args.skip_adam:
                    continue
                target = rows["adam"].get("objective", 0.0) if "adam" in rows else 0.0
                cmd = [sys.executable, __file__, "_solver_one", str(f), str(h), str(w), str(objects), solver,
                       args.config if solver == "gauss_newton" else args.adam_config, str(args.adam_iters), repr(target),
                       str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if out.returncode != 0:
                    print(f"{f} frames {solver}: failed: {out.stderr.strip().splitlines()[-3:]}", flush=True)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows[solver] = r
                obj = f"objective {r['objective']:.6g}" if "objective" in r else "objective -"
                acc = f"ATE {r['ate']:.4f} % (init {r['init_ate']:.2f})  AbsRel {r['absrel']:.5f}" if "ate" in r else "(extrapolated)"
                reach = f"  reaches Adam-300 objective at {r['time_to_target']:.1f} s" if r.get("time_to_target") else ""
                its = f" {r['iterations']} it" if "iterations" in r else ""
                its += f" ({r['coarse_rows']} coarse rows)" if r.get("coarse_rows") else ""
                print(f"{f:4d} fr {r['hw']:>8s} obj={objects} {solver:12s}{its} {obj}  {acc}  {r['seconds']:.1f} s (CPU {r['cpu_seconds']:.1f} s){reach}  "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB  threads {r['threads']}  load {os.getloadavg()[0]:.1f}", flush=True)
            if "adam" in rows and "gauss_newton" in rows:
                a, g = rows["adam"], rows["gauss_newton"]
                print(f"     time ratio adam / gauss_newton: wall {a['seconds'] / g['seconds']:.1f}x, "
                      f"CPU {a['cpu_seconds'] / g['cpu_seconds']:.1f}x", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_solver_one":
        f, h, w, objects, solver, cfg, adam_iters, target, threads = sys.argv[2:11]
        print(json.dumps(_solver_one(int(f), int(h), int(w), int(objects), solver, cfg, int(adam_iters), float(target),
                                     int(threads))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_speed_one":
        f, h, w, iters, impl, device = sys.argv[2:8]
        print(json.dumps(_speed_one(int(f), int(h), int(w), int(iters), impl, device)))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_windowed_one":
        f, h, w, mode, cfg = sys.argv[2:7]
        print(json.dumps(_windowed_one(int(f), int(h), int(w), mode, cfg)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--frames", type=int, nargs="+", default=[10, 30, 60, 120])
    sp.add_argument("--size", dest="sizes", type=int, nargs=2, action="append", help="H W (repeatable)")
    sp.add_argument("--iters", type=int, default=10, help="timed iterations before and after the flow loss starts")
    sp.add_argument("--impl", nargs="+", default=["fused"], choices=["fused", "autograd"])
    sp.add_argument("--device", default="cpu")
    ac = sub.add_parser("accuracy")
    ac.add_argument("--frames", type=int, nargs="+", default=[30])
    ac.add_argument("--size", type=int, nargs=2, default=[128, 224])
    ac.add_argument("--configs", default=json.dumps([
        {}, {"flow_loss_weight": 0.0}, {"smoothness_weight": 0.0}, {"flow_loss_weight": 0.0, "smoothness_weight": 0.0},
        {"translation_weight": 0.1}]))
    ac.add_argument("--depth-noise", type=float, default=0.02, help="multiplicative depth noise std of the pair pointmaps")
    ac.add_argument("--depth-warp", type=float, default=0.0,
                    help="amplitude of a smooth per-edge depth error (correlated network errors; see aligner.testing)")
    ac.add_argument("--scale-range", type=float, default=2.0, help="per-edge scale log-uniform in [1/r, r] (1: none)")
    ac.add_argument("--conf", default="2.0",
                    help="pair confidence of every pixel (weight log(conf)), or 'calibrated' (see aligner.testing)")
    wd = sub.add_parser("windowed")
    wd.add_argument("--frames", type=int, nargs="+", default=[30, 60, 120])
    wd.add_argument("--size", type=int, nargs=2, default=[64, 112])
    wd.add_argument("--config", default=json.dumps({"smoothness_weight": 0.0, "window_size": 30, "window_overlap": 10}))
    so = sub.add_parser("solver")
    so.add_argument("--frames", type=int, nargs="+", default=[30, 60])
    so.add_argument("--size", type=int, nargs=2, default=[144, 256], help="H W")
    so.add_argument("--objects", type=int, nargs="+", default=[1, 2], help="moving objects in the synthetic scene")
    so.add_argument("--config", default="{}", help="extra gauss_newton config (JSON)")
    so.add_argument("--adam-config", default="{}", help="extra adam config (JSON)")
    so.add_argument("--adam-iters", type=int, default=0, help="time this many Adam steps and extrapolate to 300 (0: run all)")
    so.add_argument("--skip-adam", action="store_true")
    so.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.cmd == "solver":
        cmd_solver(args)
    elif args.cmd == "speed":
        args.sizes = args.sizes or [[128, 224], [288, 512]]
        cmd_speed(args)
    elif args.cmd == "accuracy":
        cmd_accuracy(args)
    else:
        cmd_windowed(args)


if __name__ == "__main__":
    main()
