"""Print our pose metrics next to the evo and TUM-script reference values in ../shared/data/trajectories.

Usage: python benchmarks/metrics_reference_table.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from monst3r_fw_eval.datasets import read_pose_rows, read_tum_trajectory
from monst3r_fw_eval.metrics import (
    associate_timestamps, trajectory_metric_table, tum_benchmark_ate, tum_benchmark_rpe,
)

D = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "trajectories"
CASES = {
    "fr1_xyz_rgbdslam": ("freiburg1_xyz-groundtruth.txt", "freiburg1_xyz-rgbdslam.txt"),
    "fr1_xyz_ORB_kf_mono": ("freiburg1_xyz-groundtruth.txt", "freiburg1_xyz-ORB_kf_mono.txt"),
    "fr2_desk_ORB": ("fr2_desk_groundtruth.txt", "fr2_desk_ORB.txt"),
    "fr2_desk_ORB_kf_mono": ("fr2_desk_groundtruth.txt", "fr2_desk_ORB_kf_mono.txt"),
    "KITTI_00_ORB": ("KITTI_00_gt.txt", "KITTI_00_ORB.txt"),
}


def main() -> None:
    ref = json.loads((D / "reference_metrics_evo.json").read_text())["results"]
    print(f"{'case':22s} {'metric (rmse)':34s} {'ours':>16s} {'evo':>16s} {'max rel diff (all stats)':>24s}")
    for name, (g, e) in CASES.items():
        if name.startswith("KITTI"):
            est, gt = read_pose_rows(D / e), read_pose_rows(D / g)
        else:
            tr, gt = read_tum_trajectory(D / g)
            te, est = read_tum_trajectory(D / e)
            ir, ie = associate_timestamps(tr, te, max_diff=0.02)
            gt, est = gt[ir], est[ie]
        s, rows = trajectory_metric_table(est, gt)
        r = ref[name]
        print(f"{name:22s} {'sim3_scale':34s} {s:16.10f} {r['sim3_scale']:16.10f} {abs(s / r['sim3_scale'] - 1):24.1e}")
        for key, st in rows.items():
            d = st.to_dict()
            rel = max(abs(d[k] - v) / abs(v) for k, v in r[key].items() if v != 0)
            print(f"{'':22s} {key:34s} {d['rmse']:16.10f} {r[key]['rmse']:16.10f} {rel:24.1e}")
    text = (D / "reference_metrics_tum_official_scripts.txt").read_text()
    print(f"\n{'TUM scripts':44s} {'ours':>10s} {'script':>10s}")
    for block in re.split(r"^== ", text, flags=re.M)[1:]:
        g, e = re.match(r"GT=(\S+) EST=(\S+)", block).groups()
        vals = dict((m.group(1), float(m.group(2))) for m in re.finditer(r"^(\S+\.rmse) ([0-9.]+)", block, re.M))
        tr, gt = read_tum_trajectory(D / g)
        te, est = read_tum_trajectory(D / e)
        a = tum_benchmark_ate(tr, gt[:, :3, 3], te, est[:, :3, 3], max_diff=0.02)
        p = tum_benchmark_rpe(tr, gt, te, est)
        for label, ours, key in (("ATE rmse", a["stats"].rmse, "absolute_translational_error.rmse"),
                                 ("RPE trans rmse", p["trans"].rmse, "translational_error.rmse"),
                                 ("RPE rot rmse (deg)", p["rot_deg"].rmse, "rotational_error.rmse")):
            print(f"{e[:24]:24s} {label:19s} {ours:10.6f} {vals[key]:10.6f}")


if __name__ == "__main__":
    main()
