"""Sharded work on a 2-process gloo world: ``torchrun -m csdn embed`` / ``match`` give the single-process
files, a rank that fails stops every rank with an error naming it (and no output), and ranks that see
different inputs are refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_cli import BATCH_TOLERANCE, write_images

from csdn.errors import DistributedError
from csdn.retrieval import match
from csdn.retrieval.sharded import match_on_ranks
from csdn.system.distributed import World, check_same, shard_bounds

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "csdn"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def csdn(*argv: str, cwd: Path, ranks: int = 2) -> subprocess.CompletedProcess:
    command = TORCHRUN + list(argv) if ranks == 2 else [sys.executable, "-m", "csdn", *argv]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    write_images(folder / "query", 5, seed=1)
    write_images(folder / "gallery", 9, seed=2)
    return folder


def test_torchrun_embed_and_match_equal_a_single_process(folder):
    for ranks in (1, 2):
        for side in ("query", "gallery"):
            done = csdn(
                "embed",
                side,
                "--model",
                "synthetic-tiny",
                "--modality",
                "ir",
                "--quiet",
                "--dtype",
                "bfloat16",
                "--output",
                f"{side}{ranks}.npy",
                cwd=folder,
                ranks=ranks,
            )
            assert done.returncode == 0, done.stderr[-3000:]
    for side in ("query", "gallery"):
        one, two = (json.loads((folder / f"{side}{n}.npy.json").read_text()) for n in (1, 2))
        for manifest in (one, two):  # each names and hashes its own array (rows equal only within bf16 rounding)
            assert manifest.pop("file") == f"{side}{1 if manifest is one else 2}.npy" and manifest.pop("sha256")
        assert one == two and one["dtype"] == "bfloat16" and len(one["paths"]) == (5 if side == "query" else 9)
        rows = [torch.from_numpy(np.load(folder / f"{side}{n}.npy")).view(torch.bfloat16).float() for n in (1, 2)]
        torch.testing.assert_close(rows[1], rows[0], rtol=0, atol=2**-8)  # bf16 rounding of nearly equal floats
    for ranks in (1, 2):
        done = csdn(
            "match",
            "query1.npy",
            "gallery1.npy",
            "--topk",
            "4",
            "--quiet",
            "--output",
            f"ranking{ranks}.json",
            cwd=folder,
            ranks=ranks,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((folder / f"ranking{n}.json").read_text())["results"] for n in (1, 2))
    assert [[m["gallery"] for m in r["matches"]] for r in one] == [[m["gallery"] for m in r["matches"]] for r in two]
    np.testing.assert_allclose(
        [m["score"] for r in one for m in r["matches"]],
        [m["score"] for r in two for m in r["matches"]],
        atol=BATCH_TOLERANCE,
    )


def test_a_failing_rank_stops_every_rank_and_leaves_no_output(folder):
    broken = folder / "broken"
    paths = write_images(broken, 6, seed=3)
    paths[4].write_bytes(b"not an image")  # in rank 1's share (images 3-5)
    done = csdn(
        "embed", "broken", "--model", "synthetic-tiny", "--modality", "ir", "--quiet", "--output", "b.npy", cwd=folder
    )
    assert done.returncode != 0
    # both ranks stop, with the same message naming the failed rank and its share (the two processes
    # share one stderr, so count the messages rather than lines)
    assert done.stderr.count("csdn: error: rank 1 of 2 failed: images 3-5 of 6: cannot read image") == 2, done.stderr
    assert not list(folder.glob("*b.npy*"))


# ---------------------------------------------------------------------------- Python API, spawned ranks
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _outcome(call) -> str:
    try:
        call()
    except DistributedError as error:
        return str(error)
    return "no error"


def _rank(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    world = World(rank, 2, rank)
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(6, 16, generator=generator)
    gallery = torch.randn(41, 16, generator=generator)
    gallery[::7] = gallery[3]  # exact ties across the two shards
    results = {
        "shares": shard_bounds(41, world),
        "fp32": match_on_ranks(query, gallery, topk=9, world=world),
        "bf16": match_on_ranks(query, gallery.bfloat16(), topk=9, world=world, chunk_size=5),
        "lists": _outcome(lambda: check_same(f"list of rank {rank}", "image lists", world)),
        "galleries": _outcome(lambda: match_on_ranks(query, gallery + rank, world=world)),
    }
    broken = gallery.clone()
    broken[30, 2] = float("nan")  # in rank 1's rows (20-40)
    results["failure"] = _outcome(lambda: match_on_ranks(query, broken, world=world))
    dist.destroy_process_group()
    torch.save(results, Path(output) / f"rank{rank}.pt")


def test_sharded_match_merges_to_the_single_process_result_and_refuses_bad_worlds(tmp_path):
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["shares"] for r in ranks] == [(0, 20), (20, 41)]
    generator = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(6, 16, generator=generator), torch.randn(41, 16, generator=generator)
    gallery[::7] = gallery[3]
    for name, rows in (("fp32", gallery), ("bf16", gallery.bfloat16())):
        single = match(query, rows, topk=9)
        assert ranks[1][name] is None  # only rank 0 holds the merged answer
        assert torch.equal(ranks[0][name].indices, single.indices)
        torch.testing.assert_close(ranks[0][name].scores, single.scores, rtol=0, atol=1e-6)
    for rank in ranks:
        assert "see different image lists: rank(s) 1 differ from rank 0" in rank["lists"]
        assert "read different gallery embeddings: rank 0 and rank 1 see different rows in 0-19" in rank["galleries"]
        assert rank["failure"].startswith("rank 1 of 2 failed: gallery rows 20-40: gallery row 30 contains NaN")
