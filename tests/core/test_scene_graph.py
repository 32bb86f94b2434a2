"""Scene graphs against the official make_pairs output (scene_graph_pairs.json), as multisets."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from monst3r_framework.errors import RecipeError
from monst3r_framework.scene_graph import make_pairs, parse_scene_graph
from tests.conftest import shared_path


def _cases():
    path = shared_path("fixtures", "monst3r_parity", "scene_graph_pairs.json")
    return json.loads(path.read_text())["cases"]


def test_all_official_cases_match_as_multisets():
    cases = _cases()
    assert len(cases) == 14
    for case in cases:
        ours = make_pairs(case["n_frames"], case["scene_graph"], case["symmetrize"])
        assert ours.dtype == np.int64 and ours.shape == (case["n_pairs"], 2), case["scene_graph"]
        assert Counter(map(tuple, ours.tolist())) == Counter(map(tuple, case["pairs"])), (
            case["n_frames"], case["scene_graph"])
        unordered = sorted({tuple(sorted(p)) for p in ours.tolist()})
        assert unordered == sorted(map(tuple, case["unique_unordered_edges"]))


def test_symmetrised_halves_are_swapped_copies():
    pairs = make_pairs(10, "swinstride-5-noncyclic")
    half = len(pairs) // 2
    assert np.array_equal(pairs[half:], pairs[:half, ::-1])
    assert (pairs[:half, 0] < pairs[:half, 1]).all()


def test_cyclic_windows_wrap_and_noncyclic_do_not():
    cyc = {tuple(p) for p in make_pairs(10, "swin-2", symmetrize=False).tolist()}
    non = {tuple(p) for p in make_pairs(10, "swin-2-noncyclic", symmetrize=False).tolist()}
    assert (0, 9) in cyc and (0, 8) in cyc and (0, 9) not in non
    assert len(cyc) == 20 and len(non) == 17
    log = {tuple(p) for p in make_pairs(10, "logwin-3", symmetrize=False).tolist()}
    assert {j for i, j in log if i == 0} == {1, 2, 4, 6, 8, 9}  # 0 -/+ 1, 2, 4 with wrap-around
    # a window reaching the whole loop would pair a frame with itself: dropped
    assert not any(i == j for i, j in make_pairs(10, "swin2stride-5").tolist())


def test_window_prefix_quirk_decision():
    # window 1: one direction only (official behaviour)
    assert make_pairs(5, "swin-1-noncyclic").tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    # windows 10..19 are symmetrised here (the official prefix test would leave swin-12 one-way)
    pairs = make_pairs(30, "swin-12-noncyclic")
    assert Counter(map(tuple, pairs.tolist())) == Counter(map(tuple, pairs[:, ::-1].tolist()))


def test_oneref_and_small_inputs():
    assert make_pairs(4, "oneref-mid").tolist() == [[2, 0], [2, 1], [2, 2], [2, 3]]
    assert make_pairs(3, "oneref-1", symmetrize=True).shape == (3, 2)
    assert sorted(make_pairs(2, "swin-1").tolist()) == [[0, 1], [1, 0]]  # 2 frames: always symmetrised
    assert make_pairs(1, "complete").shape == (0, 2)
    with pytest.raises(RecipeError, match="outside 0..3"):
        make_pairs(4, "oneref-7")


@pytest.mark.parametrize("bad", ["swin", "swin-0", "swinstride-5-cyclic", "window-3", "oneref", "complete-2", ""])
def test_unknown_graph_strings_list_valid_forms(bad):
    with pytest.raises(RecipeError, match="valid forms: complete, swin-K"):
        parse_scene_graph(bad)


def test_pair_rows_forward_reversed_missing_and_duplicates():
    from monst3r_framework.scene_graph import pair_rows

    stored = np.array([(0, 1), (1, 2), (3, 1), (0, 1), (2, 1)])
    rows, forward = pair_rows(stored, np.array([(0, 1), (1, 0), (1, 2), (2, 1), (1, 3), (4, 0), (5, 6)]))
    # (0, 1): first of its two rows; (1, 0): read backwards; (2, 1) stored as is beats (1, 2) reversed
    assert rows.tolist() == [0, 0, 1, 4, 2, -1, -1]
    assert forward.tolist() == [True, False, True, True, False, False, False]
    empty_rows, empty_fwd = pair_rows(np.zeros((0, 2)), np.array([(0, 1)]))
    assert empty_rows.tolist() == [-1] and empty_fwd.tolist() == [False]
    assert pair_rows(stored, np.zeros((0, 2)))[0].shape == (0,)
