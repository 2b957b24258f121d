"""The engine: the ordered fold, chunk tasks, runners and checkpointed reductions.

Oracle: a plain left fold ``((s_0 + s_1) + s_2) + ...`` of the kernel over
row slices, computed here with numpy slicing and no engine code; results
must match it bit for bit (the fold's whole point), so the tolerance is 0.
"""

import json

import numpy as np
import pytest
from conftest import planted, relu_net

from stream_relu.checkpoint import ChunkRecord, StateFolder
from stream_relu.engine import (
    ArraySource,
    ChunkOptions,
    OrderedFold,
    SerialRunner,
    SubsetSource,
    open_runner,
    reduce_chunks,
    run_chunk,
)
from stream_relu.errors import ClusterError, DataError
from stream_relu.moments import GAUSS, gauss_chunk

N, D, CHUNK = 5000, 4, 700  # 8 chunks, the last one partial


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(7)
    a, W, b = planted(D, 2, seed=7)
    x = rng.standard_normal((N, D))
    return x, relu_net(x, a, W, b) + 0.1 * rng.standard_normal(N)


def _plain_fold(x, y, chunk):
    total = 0
    for lo in range(0, x.shape[0], chunk):
        total = total + gauss_chunk(x[lo : lo + chunk], y[lo : lo + chunk])
    return total


class ReversedRunner:
    """Yields chunk results last first: the fold must not care."""

    name = "reversed"

    def imap(self, source, kernel, plan, options=ChunkOptions(), indices=None):
        order = list(range(source.n_chunks) if indices is None else indices)
        for i in reversed(order):
            yield i, run_chunk(source, i, kernel, plan, options)


def test_ordered_fold_buffers_early_arrivals_and_folds_left_to_right():
    fold = OrderedFold()
    seen = []
    for index, value in [(2, 30), (0, 10), (3, 40), (1, 20)]:
        fold.push(index, value, on_fold=lambda j: seen.append((j, fold.total)))
    assert seen == [(0, 10), (1, 30), (2, 60), (3, 100)]
    assert fold.next == 4 and fold.waiting == 0


@pytest.mark.parametrize("runner", [SerialRunner(), ReversedRunner()], ids=["serial", "reversed"])
def test_reduction_is_bitwise_the_plain_left_fold(xy, runner):
    x, y = xy
    red = reduce_chunks(ArraySource(x, y, CHUNK), GAUSS, None, runner)
    assert red.state == _plain_fold(x, y, CHUNK)
    assert red.report.nonfinite_rows == 0 and red.report.reused == 0


def test_nonfinite_rows_fail_naming_the_chunk_or_are_skipped(xy):
    x, y = xy[0].copy(), xy[1].copy()
    x[3 * CHUNK + 5, 1] = np.nan
    y[6 * CHUNK] = np.inf
    source = ArraySource(x, y, CHUNK)
    with pytest.raises(DataError, match=r"2 rows hold NaN or infinity .* chunk\(s\) 3, 6"):
        reduce_chunks(source, GAUSS, None, SerialRunner())
    red = reduce_chunks(source, GAUSS, None, SerialRunner(), options=ChunkOptions(nonfinite="skip"))
    assert red.report.nonfinite == {3: 1, 6: 1}
    good = np.isfinite(y) & np.isfinite(x).all(axis=1)
    oracle = 0
    for lo in range(0, N, CHUNK):
        keep = good[lo : lo + CHUNK]
        oracle = oracle + gauss_chunk(x[lo : lo + CHUNK][keep], y[lo : lo + CHUNK][keep])
    assert red.state == oracle


def test_duplicated_chunks_share_a_fingerprint(xy):
    x, y = xy[0].copy(), xy[1].copy()
    x[2 * CHUNK : 3 * CHUNK] = x[5 * CHUNK : 6 * CHUNK]
    y[2 * CHUNK : 3 * CHUNK] = y[5 * CHUNK : 6 * CHUNK]
    red = reduce_chunks(ArraySource(x, y, CHUNK), GAUSS, None, SerialRunner(), options=ChunkOptions(fingerprint=True))
    assert red.report.duplicate_groups() == [[2, 5]]


def test_subset_source_renumbers_the_chosen_chunks(xy):
    x, y = xy
    sub = SubsetSource(ArraySource(x, y, CHUNK), (1, 4))
    assert (sub.n_chunks, sub.n_samples) == (2, 2 * CHUNK)
    red = reduce_chunks(sub, GAUSS, None, SerialRunner())
    assert red.state == gauss_chunk(x[CHUNK : 2 * CHUNK], y[CHUNK : 2 * CHUNK]) + gauss_chunk(
        x[4 * CHUNK : 5 * CHUNK], y[4 * CHUNK : 5 * CHUNK]
    )


class CountingRunner(SerialRunner):
    def __init__(self):
        self.computed = []

    def imap(self, source, kernel, plan, options=ChunkOptions(), indices=None):
        for i, result in super().imap(source, kernel, plan, options, indices):
            self.computed.append(i)
            yield i, result


def test_checkpoint_reuses_every_chunk_and_recomputes_a_corrupted_one(xy, tmp_path):
    x, y = xy
    source = ArraySource(x, y, CHUNK)
    folder = StateFolder(tmp_path / "state", {"test": 1})
    oracle = _plain_fold(x, y, CHUNK)
    key = oracle.key  # a pass checkpoint is named by its state's kind and key
    first = reduce_chunks(source, GAUSS, None, SerialRunner(), checkpoint=folder.pass_checkpoint("gauss", key))
    # 7 full chunks enter the persisted prefix; the partial last one stays a chunk record
    prefix_meta = json.loads((tmp_path / "state" / f"gauss-{key}" / "prefix.json").read_text())
    assert prefix_meta["k"] == 7 and len(prefix_meta["chunks"]) == 7
    again = CountingRunner()
    second = reduce_chunks(source, GAUSS, None, again, checkpoint=folder.pass_checkpoint("gauss", key))
    assert again.computed == [] and second.report.reused == source.n_chunks
    assert second.state == first.state == oracle
    record = tmp_path / "state" / f"gauss-{key}" / "chunk-000000007.npz"
    record.write_bytes(record.read_bytes()[:-8] + b"corrupt!")
    third_runner = CountingRunner()
    third = reduce_chunks(source, GAUSS, None, third_runner, checkpoint=folder.pass_checkpoint("gauss", key))
    assert third_runner.computed == [7] and third.state == first.state


def test_chunk_record_json_round_trip():
    record = ChunkRecord(index=3, rows=700, nonfinite=2, fingerprint="abc")
    assert ChunkRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_open_runner_choices(xy):
    x, y = xy
    with open_runner(ArraySource(x, y, CHUNK), client=None, scheduler=None) as runner:
        assert runner.name == "serial"
    with pytest.raises(ClusterError, match="cannot connect to the dask scheduler"):
        with open_runner(object(), client=None, scheduler="nosuchprotocol://127.0.0.1:1"):
            pass


def test_distributed_runner_uses_its_own_client_not_the_default(xy):
    from distributed import Client, LocalCluster

    from stream_relu.engine import DistributedRunner

    x, y = xy
    source = ArraySource(x, y, CHUNK)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as client:
            red = reduce_chunks(source, GAUSS, None, DistributedRunner(client))
    assert red.state == _plain_fold(x, y, CHUNK)
