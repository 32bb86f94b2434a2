"""Wall time of CLI commands that do no pipeline work: ``--help``, ``plugins``, ``recipe check``.

Each command runs in a fresh interpreter ``--repeat`` times; the script prints min and median
wall seconds and CPU seconds (user + system: hardly affected by other processes on a shared
machine), the same for ``python -c pass`` and ``python -c "import torch"`` (references measured in
the same run, so a busy machine shows as slower references too), and the load average.

    python benchmarks/bench_cli_startup.py                       # this checkout
    python benchmarks/bench_cli_startup.py --source /tmp/old     # another checkout (e.g. before a change)

``--source`` puts that checkout (and its ``plugins/``) first on ``PYTHONPATH``; entry points still come
from the installed distribution. Target (issue 12): each command under 1 s on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMANDS = {
    "--help": ["--help"],
    "plugins": ["plugins"],
    "recipe check": ["recipe", "check", "{recipes}/paper.yaml", "{recipes}/classical.yaml"],
}


def _time(argv: list[str], env: dict[str, str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall seconds and CPU seconds (user + system of the child) of each run."""
    wall, cpu = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        res = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--source", type=Path, default=REPO, help="checkout to measure (default: this one)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    src = args.source.resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(src / "plugins")]), "COLUMNS": "100"}
    cli = [sys.executable, "-c", "from monst3r_framework.cli import main; main()"]
    rows: dict[str, tuple[list[float], list[float]]] = {
        "python -c pass": _time([sys.executable, "-c", "pass"], env, args.repeat),
        "import torch": _time([sys.executable, "-c", "import torch"], env, args.repeat),
    }
    for name, tail in COMMANDS.items():
        rows[f"monst3r-fw {name}"] = _time(cli + [a.format(recipes=src / "recipes") for a in tail], env, args.repeat)
    load = os.getloadavg()
    print(f"source {src}; {args.repeat} runs each; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} CPUs")
    print("wall = elapsed seconds (what a user waits, inflated by load); cpu = user + system seconds of the process")
    print(f"{'command':<26} {'wall min':>8} {'wall med':>8} {'cpu min':>8} {'cpu med':>8} {'wall med / torch':>17}")
    torch_median = statistics.median(rows["import torch"][0])
    for name, (wall, cpu) in rows.items():
        print(f"{name:<26} {min(wall):8.2f} {statistics.median(wall):8.2f} {min(cpu):8.2f} {statistics.median(cpu):8.2f} "
              f"{statistics.median(wall) / torch_median:17.2f}")
    if args.json:
        args.json.write_text(json.dumps({"source": str(src), "load": load,
                                         "wall_s": {k: v[0] for k, v in rows.items()},
                                         "cpu_s": {k: v[1] for k, v in rows.items()}}, indent=1))


if __name__ == "__main__":
    main()
