"""`monst3r-fw view` / `report` on bad input: one clear line, exit code 2, nothing written."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from monst3r_framework.cli import main


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


def test_view_a_folder_that_is_not_a_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    (tmp_path / "photos").mkdir()
    code, err = _run(["view", str(tmp_path / "photos")], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "is not a run folder (no run.json, and no run folders inside)" in err
    code, err = _run(["view", str(tmp_path / "nope")], capsys)
    assert code == 2 and "does not exist" in err


def test_view_a_run_with_a_missing_stage(synth_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    run = tmp_path / "run"
    shutil.copytree(synth_runs / "complete", run)
    status = json.loads((run / "run.json").read_text())
    status["store"] = str(run / "store.zarr")
    (run / "run.json").write_text(json.dumps(status))
    key = next(s["key"] for s in status["stages"] if s["kind"] == "global_aligner")
    shutil.rmtree(run / "store.zarr" / "stages" / "global_aligner" / key)
    code, err = _run(["view", str(run)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"stage global_aligner output {key} is missing from store" in err and "rerun `monst3r-fw run`" in err
    code, err = _run(["report", str(run)], capsys)
    assert code == 2 and f"stage global_aligner output {key} is missing" in err
    assert not (run / "report").exists()


def test_view_on_a_port_in_use(synth_runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        code, err = _run(["view", str(synth_runs / "complete"), "--port", str(port)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"port {port} on 127.0.0.1 is in use; pass another --port, or omit --port to get a free one" in err


def test_report_verb_remakes_the_report(synth_runs, capsys):
    main(["report", str(synth_runs / "complete")])
    out = capsys.readouterr().out
    assert f"report: {synth_runs / 'complete' / 'report' / 'report.html'}" in out
    assert (synth_runs / "complete" / "report" / "montage.png").exists()


def test_view_prints_the_url_serves_and_stops_on_ctrl_c(synth_runs):
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    env = {**os.environ, "COLUMNS": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "monst3r_framework.cli", "view", str(synth_runs / "complete")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        deadline = time.time() + 120
        lines = []
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("viewer: http://127.0.0.1:"):
                url = line.split()[1]
        assert url is not None, "".join(lines)
        assert "global_aligner (synthetic_gt) outputs" in "".join(lines)
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, rest
        assert "viewer stopped" in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
