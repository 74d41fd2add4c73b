"""Two gloo processes on CPU give the same merged results as one process."""
import json

import torch
import torch.multiprocessing as mp

from robustkit.eval import evaluate
from robustkit.eval.distributed import shard
from robustkit.eval.records import record_path

from ._dist_worker import run_rank
from ._helpers import comparable, mnist_images, real_attacks, small_model


def test_shard_assigns_every_batch_to_exactly_one_rank():
    parts = [shard(range(11), r, 3) for r in range(3)]
    assert sorted(b for p in parts for b in p) == list(range(11)) and parts[1] == [1, 4, 7, 10]


def test_two_gloo_processes_equal_one_process(tmp_path):
    n, batch_size = 50, 10
    mp.spawn(run_rank, args=(2, str(tmp_path / "rdzv"), str(tmp_path / "dist"), n, batch_size), nprocs=2, join=True)
    # each rank wrote its own shard: rank 0 batches 0, 2, 4 and rank 1 batches 1, 3
    for rank, expected in ((0, [0, 2, 4]), (1, [1, 3])):
        lines = record_path(tmp_path / "dist", rank).read_text().splitlines()
        assert [json.loads(line)["batch"] for line in lines] == expected
    distributed = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert distributed["device"]["world_size"] == 2

    assert torch.get_num_threads() == 1      # as in the workers (conftest), so float reductions run alike
    model = small_model()
    single = evaluate(model, mnist_images(n), real_attacks(model), out=tmp_path / "single", batch_size=batch_size,
                      progress=False, report=False)
    assert comparable(distributed) == comparable(single)
