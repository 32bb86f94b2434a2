"""Pair-predictor throughput: per-frame encoder cache vs the official re-encode-every-pair path.

Runs the ``monst3r`` stage twice on the same synthetic frames and scene graph, once with
``cache_encoder=True`` and once with ``False``, and prints pairs/s, encoder passes and peak memory
(process RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA) side by side.

Examples::

    # the issue's CPU figure: full-size MonST3R (ViT-L encoder, random weights), 224x224, 10 frames
    python benchmarks/bench_pair_predictor.py --model vitl --height 224 --width 224 --frames 10 \\
        --scene-graph swinstride-5-noncyclic --device cpu --dtype fp32

    # quick smoke run with the tiny fixture configuration
    python benchmarks/bench_pair_predictor.py --model tiny --height 64 --width 96 --frames 6

    # GPU, 60 frames, bf16 autocast
    python benchmarks/bench_pair_predictor.py --model vitl --height 288 --width 512 --frames 60 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "plugins"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from monst3r_framework.scene_graph import make_pairs  # noqa: E402
from monst3r_framework.stages import FrameSet, PairInputs, RunContext  # noqa: E402
from monst3r_fw_reference.network import build_model, config_from_model_string, load_model  # noqa: E402
from monst3r_fw_reference.pair_predictor import MonST3RPairPredictor, Monst3rPairConfig  # noqa: E402

_BASE = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='PatchEmbedDust3R', img_size=(512, 512), "
         "head_type='dpt', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
         "{dims}, landscape_only=False)")
MODELS = {
    # the released MonST3R / DUSt3R-512 size (ViT-L encoder, ViT-B decoder)
    "vitl": "enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12",
    # ViT-B encoder, ViT-B decoder
    "vitb": "enc_embed_dim=768, enc_depth=12, enc_num_heads=12, dec_embed_dim=768, dec_depth=12, dec_num_heads=12",
    # the parity fixture's tiny network
    "tiny": "enc_embed_dim=64, enc_depth=4, enc_num_heads=2, dec_embed_dim=64, dec_depth=10, dec_num_heads=2",
}


class PeakRSS:
    """Samples this process's resident set size every few ms (peak during a ``with`` block)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.start = self._rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def synthetic_frames(n: int, h: int, w: int, seed: int = 0) -> FrameSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([
        np.stack([np.sin(xx / 11 + f), np.cos(yy / 7 - 0.5 * f), np.sin((xx + yy) / 17 + f)], -1) * 100 + 128
        + rng.normal(0, 6, (h, w, 3)) for f in range(n)
    ]).clip(0, 255).astype(np.uint8)
    return FrameSet(rgb=rgb, frame_index=np.arange(n), timestamps=np.arange(n) / 10.0, original_hw=(h, w),
                    network_from_original=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


def run_path(model, frames: FrameSet, pairs: np.ndarray, device: str, dtype: str, batch_size: int, cached: bool
             ) -> dict:
    cfg = Monst3rPairConfig(dtype=dtype, batch_size=batch_size, cache_encoder=cached)
    stage = MonST3RPairPredictor(cfg, model=model)
    ctx = RunContext(device=device)
    stage.setup(ctx)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        t0, c0 = time.perf_counter(), time.process_time()
        stage.run(PairInputs(frames=frames, pairs=pairs), ctx)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - c0  # robust to other processes sharing the CPU
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else rss.peak
    return {
        "path": "cached" if cached else "re-encode", "seconds": seconds, "cpu_seconds": cpu_seconds,
        "pairs": int(len(pairs)),
        "pairs_per_s": len(pairs) / seconds, "encoder_passes": stage.encoder_passes,
        "peak_mem_gib": peak / 2**30, "peak_kind": "cuda_max_allocated" if device.startswith("cuda") else "process_rss",
        "batch_size": batch_size,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="vitl", help="network size (random weights)")
    ap.add_argument("--checkpoint", default=None, help="load real weights instead of random ones")
    ap.add_argument("--height", type=int, default=224)
    ap.add_argument("--width", type=int, default=224)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--scene-graph", default="swinstride-5-noncyclic")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--batch-size", type=int, default=0, help="pairs per batch (0 = auto)")
    ap.add_argument("--paths", choices=["both", "cached", "naive"], default="both")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        model = load_model(args.checkpoint, args.device)
        model_desc = f"checkpoint {args.checkpoint}"
    else:
        model = build_model(config_from_model_string(_BASE.format(dims=MODELS[args.model]))).to(args.device)
        model.eval().requires_grad_(False)
        model_desc = f"{args.model} (random weights)"
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    frames = synthetic_frames(args.frames, args.height, args.width)
    pairs = make_pairs(args.frames, args.scene_graph)
    bs = args.batch_size
    if bs == 0:
        from monst3r_fw_reference.pair_predictor import auto_batch_size
        bs = auto_batch_size(model, args.height, args.width, torch.device(args.device))
    print(f"model {model_desc}: {n_params / 1e6:.1f} M parameters; {args.frames} frames {args.height}x{args.width}, "
          f"graph {args.scene_graph} -> {len(pairs)} directed pairs; device {args.device}, dtype {args.dtype}, "
          f"batch {bs}, torch threads {torch.get_num_threads()}", flush=True)

    results = []
    order = {"both": (True, False), "cached": (True,), "naive": (False,)}[args.paths]
    for cached in order:
        res = run_path(model, frames, pairs, args.device, args.dtype, bs, cached)
        results.append(res)
        print(f"  {res['path']:>9}: {res['seconds']:8.2f} s wall ({res['cpu_seconds']:8.2f} s CPU)  "
              f"{res['pairs_per_s']:7.3f} pairs/s  "
              f"encoder passes {res['encoder_passes']:5d}  peak {res['peak_kind']} {res['peak_mem_gib']:.2f} GiB",
              flush=True)
    out = {"args": vars(args), "n_params": n_params, "results": results}
    if len(results) == 2:
        out["speedup"] = results[1]["seconds"] / results[0]["seconds"]
        out["speedup_cpu_time"] = results[1]["cpu_seconds"] / results[0]["cpu_seconds"]
        print(f"  speed-up of the encoder cache: {out['speedup']:.2f}x wall, {out['speedup_cpu_time']:.2f}x CPU time"
              " (CPU time is the fair figure on a shared machine)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
