"""Time SEA-RAFT spring-M at MonST3R's resolution (random weights unless a checkpoint is given).

    python benchmarks/bench_searaft.py [--device cuda] [--dtype bf16] [--checkpoint PATH] [--batch 4]

Prints seconds per directed pair (mean of the timed repeats) and peak memory on CUDA.
"""

from __future__ import annotations

import argparse
import time

import torch

from monst3r_fw_reference.searaft import SeaRaft, SeaRaftConfig, load_searaft


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    if args.checkpoint:
        net = load_searaft(args.checkpoint, device=args.device)
    else:
        net = SeaRaft(SeaRaftConfig.spring_m()).eval().requires_grad_(False).to(args.device)
    img1 = torch.rand(args.batch, 3, args.height, args.width, device=args.device) * 255
    img2 = torch.roll(img1, shifts=(2, 3), dims=(2, 3))
    amp = torch.autocast("cuda", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]) \
        if args.device.startswith("cuda") and args.dtype != "fp32" else torch.autocast("cpu", enabled=False)

    def once() -> None:
        with torch.inference_mode(), amp:
            net(img1, img2, iters=args.iters)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    once()  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    per_pair = sum(times) / len(times) / args.batch
    print(f"sea_raft spring-M {args.height}x{args.width} iters={args.iters} batch={args.batch} "
          f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()}: {per_pair:.3f} s/pair")
    if args.device.startswith("cuda"):
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
