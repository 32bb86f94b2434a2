"""Row reads from stored arrays: ``read_rows`` (one round trip per run of rows), ``PairIndex`` and
``FlowReader`` (the stored pair list read once, flow rows read per run)."""

from __future__ import annotations

import numpy as np
import pytest

from monst3r_framework.scene_graph import PairIndex, make_pairs, pair_rows
from monst3r_framework.stages import FlowField, read_rows
from monst3r_framework.store import LazyArray


class CountingArray:
    """A numpy array standing in for a Zarr array that counts reads (store round trips)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.reads, self.basename = data, 0, "counted"
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, key):
        self.reads += 1
        return self.data[key]


def test_read_rows_any_order_repeats_negative_one_read_per_run():
    data = np.arange(20 * 3, dtype=np.float16).reshape(20, 3)
    stored = CountingArray(data)
    lazy = LazyArray(stored)
    rows = np.array([5, 3, 4, 4, -1, 11, 12])  # runs 3-5, 11-12, 19
    got = read_rows(lazy, rows)
    assert got.dtype == np.float32  # float16 storage reads as float32
    np.testing.assert_array_equal(got, data[rows].astype(np.float32))
    assert stored.reads == 3
    np.testing.assert_array_equal(lazy[rows], got)  # fancy indexing goes the same way
    assert read_rows(lazy, []).shape == (0, 3)
    np.testing.assert_array_equal(read_rows(data, rows), data[rows])


def test_pair_index_equals_pair_rows_and_ignores_out_of_range_queries():
    stored = np.array([(0, 1), (1, 2), (2, 1), (3, 0), (1, 2)])
    query = np.array([(0, 1), (1, 0), (1, 2), (2, 1), (0, 3), (4, 0), (-1, 2), (7, 9)])
    rows, fwd = PairIndex(stored).rows(query)
    assert rows.tolist() == [0, 0, 1, 2, 3, -1, -1, -1]
    assert fwd.tolist() == [True, False, True, True, False, False, False, False]
    assert [r.tolist() for r in pair_rows(stored, query)] == [rows.tolist(), fwd.tolist()]
    assert PairIndex(np.zeros((0, 2))).rows(query)[0].tolist() == [-1] * len(query)


def test_flow_reader_reads_pairs_once_and_rows_per_run():
    rng = np.random.default_rng(0)
    edges = make_pairs(30, "swin-2-noncyclic", symmetrize=False)  # (0,1), (0,2), (1,2), ...
    flow_ij = rng.standard_normal((len(edges), 4, 5, 2)).astype(np.float32)
    flow_ji = rng.standard_normal((len(edges), 4, 5, 2)).astype(np.float32)
    counted = {k: CountingArray(v) for k, v in (("pairs", edges), ("ij", flow_ij), ("ji", flow_ji))}
    field = FlowField(pairs=LazyArray(counted["pairs"]), flow_ij=LazyArray(counted["ij"]),
                      flow_ji=LazyArray(counted["ji"]))
    numpy_field = FlowField(pairs=edges, flow_ij=flow_ij, flow_ji=flow_ji)
    reader = field.reader()
    assert counted["pairs"].reads == 1
    chunk = edges[10:18]
    query = np.concatenate([chunk, chunk[:, ::-1]])
    got = reader.gather(query)
    np.testing.assert_array_equal(got, np.concatenate([flow_ij[10:18], flow_ji[10:18]]))
    np.testing.assert_array_equal(got, numpy_field.gather(query))
    # one read per direction for the consecutive rows, none of the pair list again
    assert (counted["pairs"].reads, counted["ij"].reads, counted["ji"].reads) == (1, 1, 1)
    for _ in range(5):
        reader.gather(chunk[:2])
    assert counted["pairs"].reads == 1
    assert reader.has(np.array([(3, 1), (1, 3), (0, 5)])).tolist() == [True, True, False]
    with pytest.raises(KeyError, match=r"pair \(0, 5\) has no flow"):
        reader.gather(np.array([(0, 1), (0, 5)]))
    assert reader.gather(np.zeros((0, 2), np.int64)).shape == (0, 4, 5, 2)
