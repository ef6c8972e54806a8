"""The probe's batches: the short last one dropped under ``protocol.drop_last``, as the reference's
gradient pass (a training loader with ``drop_last=True``) drops it, before ``max_batches`` and
before the split across ranks; the record states how many batches and images were probed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from grft_app.data.splits import DataSplits
from grft_app.lit.data import TaskDataModule, probe_extent
from helpers.app_runs import run


def numbered(n: int) -> TensorDataset:
    """Item i is (i, i): a loaded batch names the items it holds."""
    return TensorDataset(torch.arange(n), torch.arange(n))


def datamodule(n: int, batch_size: int, drop_last: bool = True) -> TaskDataModule:
    data = numbered(n)
    return TaskDataModule(DataSplits(train=data, probe=data, test=data, num_classes=n), batch_size, drop_last=drop_last)


def walked(loader) -> list[list[int]]:
    return [batch[0].tolist() for batch in loader]


@pytest.mark.parametrize("n,batch_size", [(37, 8), (1000, 32), (1000, 16), (23_929, 32)])
def test_one_process_probes_floor_n_over_batch_full_batches(n, batch_size):
    loader = datamodule(n, batch_size).probe_dataloader()
    assert len(loader) == n // batch_size
    assert probe_extent(loader) == {"batches": n // batch_size, "images": (n // batch_size) * batch_size}
    if n < 100:  # load them: every batch full, no item twice
        batches = walked(loader)
        assert [len(b) for b in batches] == [batch_size] * (n // batch_size)
        assert len({i for b in batches for i in b}) == (n // batch_size) * batch_size


def test_max_batches_counts_after_the_short_batch_is_dropped_and_keep_last_keeps_it():
    assert len(datamodule(37, 8).probe_dataloader(max_batches=10)) == 4
    assert len(datamodule(37, 8).probe_dataloader(max_batches=2)) == 2
    kept = datamodule(37, 8, drop_last=False).probe_dataloader()
    assert probe_extent(kept) == {"batches": 5, "images": 37}


def test_fewer_items_than_a_probe_batch_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match="lower probe.batch_size"):
        datamodule(5, 8).probe_dataloader()


def _rank_probe(rank: int, world: int, init_file: str, out_dir: str, n: int, batch_size: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loader = datamodule(n, batch_size).probe_dataloader()
        facts = {"batches": walked(loader), "extent": probe_extent(loader)}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(facts))
    finally:
        dist.destroy_process_group()


def test_two_ranks_probe_floor_n_over_batch_batches_together(tmp_path):
    n, batch_size = 45, 4  # 11 full batches and 1 left over: rank 0 gets 6, rank 1 gets 5
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_rank_probe, args=(2, str(tmp_path / "init"), str(tmp_path), n, batch_size), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sum(len(r["batches"]) for r in ranks) == n // batch_size
    assert all(len(b) == batch_size for r in ranks for b in r["batches"])
    # Together the ranks walk exactly the one-process sequence, and each knows the whole extent.
    single = walked(datamodule(n, batch_size).probe_dataloader())
    assert sorted(map(tuple, ranks[0]["batches"] + ranks[1]["batches"])) == sorted(map(tuple, single))
    assert ranks[0]["extent"] == ranks[1]["extent"] == {"batches": 11, "images": 44}


def test_the_record_states_the_probes_batches_and_images(tmp_path):
    # digits: 200 training images; at batch 32 the probe walks 6 batches (192 images), not 7.
    record, _ = run(tmp_path / "runs", "probe.max_batches=null", "batch_size=32")
    assert record.probe_facts["batches"] == 200 // 32 and record.probe_facts["images"] == 6 * 32
