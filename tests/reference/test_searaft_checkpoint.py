"""SEA-RAFT checkpoint layouts and loading (``checkpoint_load_report.json``, key tables)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from monst3r_fw_reference.searaft import CheckpointError, SeaRaft, SeaRaftConfig, load_searaft, read_state_dict
from monst3r_fw_reference.searaft.checkpoint import SPRING_M_FILENAME, resolve_checkpoint

try:
    from tests.conftest import shared_path
except ImportError:  # plain `pytest` without the repo root on sys.path
    from conftest import shared_path  # type: ignore[no-redef]

BARE = "tiny_searaft_spring-M.pth"
PREFIXED = "tiny_searaft_spring-M_module_prefix.pth"


class _Opaque:
    """A pickled class that a weights-only load must refuse."""


@pytest.fixture(scope="module")
def fx_dir() -> Path:
    folder = shared_path("fixtures", "searaft_parity")
    import hashlib

    manifest = json.loads((folder / "MANIFEST.json").read_text())
    for name in (BARE, PREFIXED, "checkpoint_load_report.json", "tiny_config.json", "full_config_state_dict.json",
                 "tiny_raft_config.json"):
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == manifest[name]["sha256"], name
    return folder


@pytest.fixture(scope="module")
def report(fx_dir) -> dict:
    return json.loads((fx_dir / "checkpoint_load_report.json").read_text())


@pytest.mark.parametrize("name", [BARE, PREFIXED])
def test_file_layout_matches_report(fx_dir, report, name, tmp_path) -> None:
    entry, files = report[name], report["files"][name]
    path = fx_dir / name
    assert path.stat().st_size == files["file_bytes"]
    with zipfile.ZipFile(path) as zf:  # repacked with DEFLATE; torch.load reads it directly
        assert any(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
    raw = torch.load(path, map_location="cpu", weights_only=True)
    # Re-saved uncompressed under the same name it has the reported size (aliases share storage).
    torch.save(raw, tmp_path / name)
    assert (tmp_path / name).stat().st_size == files["stored_uncompressed_bytes"]
    assert entry["torch_load_weights_only_true"] == "ok"
    assert f"{type(raw).__module__}.{type(raw).__name__}" == entry["top_level_type"] == "collections.OrderedDict"
    assert len(raw) == entry["n_keys"] == files["n_keys"] == 472
    assert list(raw)[:3] == entry["first_keys"]
    assert sorted({str(v.dtype).removeprefix("torch.") for v in raw.values()}) == entry["dtypes"]


def test_both_layouts_load_to_the_same_model(fx_dir, report) -> None:
    bare = read_state_dict(fx_dir / BARE)
    prefixed = read_state_dict(fx_dir / PREFIXED)
    assert list(bare) == list(prefixed)
    assert all(torch.equal(bare[k], prefixed[k]) for k in bare)
    models = [load_searaft(fx_dir / name) for name in (BARE, PREFIXED)]
    for name, model in zip((BARE, PREFIXED), models):
        # official: load_RAFT returns the model in eval mode with exactly the file's tensors
        assert model.training is report[name]["official_load_RAFT"]["training_mode"] is False
        assert not any(p.requires_grad for p in model.parameters())
        state = model.state_dict()
        assert list(state) == list(bare)
        assert all(torch.equal(state[k], bare[k]) for k in bare) is report[name]["loaded_state_equals_generator_state"]
    # bn3 and downsample.1 are one module under two names (the 20 alias keys)
    state = models[0].state_dict()
    assert state["cnet.layer2.0.bn3.weight"].data_ptr() == state["cnet.layer2.0.downsample.1.weight"].data_ptr()


def test_path_name_does_not_select_the_class(fx_dir, report, tmp_path) -> None:
    """Official load_RAFT builds the old RAFT class for a path without a capital M and then fails
    (recorded in the report); our loader only builds SEA-RAFT, whatever the file is called."""
    assert "Error(s) in loading state_dict for RAFT" in report["path_without_capital_M"]
    plain = tmp_path / "tiny_searaft_spring.pth"
    shutil.copyfile(fx_dir / BARE, plain)
    a, b = load_searaft(plain).state_dict(), load_searaft(fx_dir / BARE).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _table(model: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]


def test_tiny_key_table(fx_dir) -> None:
    info = json.loads((fx_dir / "tiny_config.json").read_text())
    model = SeaRaft(SeaRaftConfig.from_json(fx_dir / "tiny_raft_config.json"))
    assert _table(model) == [(e["key"], e["shape"], e["dtype"]) for e in info["keys"]]
    assert sum(p.numel() for p in model.parameters()) == info["parameter_count_unique"] == 927_700
    per_module = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    assert per_module == info["parameter_count_per_top_level_module"]
    assert sum(e["alias_of"] is not None for e in info["keys"]) == info["n_alias_keys"] == 20


def test_full_spring_m_key_table(fx_dir) -> None:
    info = json.loads((fx_dir / "full_config_state_dict.json").read_text())
    assert SeaRaftConfig.from_mapping(info["config"]) == SeaRaftConfig.spring_m()
    with torch.device("meta"):
        model = SeaRaft(SeaRaftConfig.spring_m())
    assert _table(model) == [(e["key"], e["shape"], e["dtype"]) for e in info["keys"]]
    assert sum(p.numel() for p in model.parameters()) == info["parameter_count_unique"] == 19_663_876
    per_module = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    assert per_module == info["parameter_count_per_top_level_module"]
    # the architecture is recoverable from the shapes alone (the loader does this)
    shapes = {e["key"]: torch.empty(e["shape"], device="meta") for e in info["keys"]}
    assert SeaRaftConfig.from_state_dict(shapes) == SeaRaftConfig.spring_m()


def test_missing_file_names_the_weights(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=SPRING_M_FILENAME) as err:
        load_searaft(tmp_path / "nope.pth")
    assert "princeton-vl/SEA-RAFT" in str(err.value) and "SEARAFT_CHECKPOINT" in str(err.value)


def test_strict_key_check_lists_missing_and_unexpected(fx_dir, tmp_path) -> None:
    state = read_state_dict(fx_dir / BARE)
    del state["flow_head.2.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["init_conv.bias"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_searaft(path)
    msg = str(err.value)
    assert "1 missing keys (flow_head.2.bias)" in msg and "1 unexpected keys (extra.weight)" in msg
    assert "init_conv.bias (3,) vs (64,)" in msg and "\n" not in msg


def test_unsafe_or_wrapped_files_are_refused(tmp_path) -> None:
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"a": torch.zeros(1)}}, wrapped)
    with pytest.raises(CheckpointError, match="plain state dict"):
        read_state_dict(wrapped)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"w": _Opaque()}, unsafe)  # an arbitrary class: refused by weights_only=True
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(unsafe)


def test_checkpoint_env_fallback(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("SEARAFT_CHECKPOINT", raising=False)
    with pytest.raises(CheckpointError, match="no checkpoint configured"):
        resolve_checkpoint(None)
    monkeypatch.setenv("SEARAFT_CHECKPOINT", str(tmp_path / "x.pth"))
    assert resolve_checkpoint(None) == tmp_path / "x.pth"
    assert resolve_checkpoint("y.pth") == Path("y.pth")
