"""The ``csdn`` command's allocator setting: freed memory is reused instead of faulted in anew, only in
processes the command owns, and never against the user's own glibc settings."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from csdn.cli import app
from csdn.system.allocator import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a round allocates sixteen 2 MiB buffers and one of 64 MiB and frees them all: glibc's default gives
# the freed heap top back to the system (it exceeds the trim threshold) and unmaps the large buffer,
# so the next round faults them in again
_FAULTS = """
import json, resource, sys
from csdn.system.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "kept" else False
def one_round():
    buffers = [bytearray(2 << 20) for _ in range(16)] + [bytearray(64 << 20)]  # 64 MiB: above any mmap threshold
    del buffers
one_round(); one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    one_round()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(setting: str) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "CSDN_MALLOC"))}
    env.pop("GLIBC_TUNABLES", None)
    done = subprocess.run([sys.executable, "-c", _FAULTS, setting], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="the setting exists only for glibc's allocator")
def test_kept_memory_is_reused_instead_of_page_faulted_in_again():
    default, kept = _faults("default"), _faults("kept")
    assert kept["applied"] is True
    pages = 10 * (16 * (2 << 20) + (64 << 20)) // 4096
    assert default["faults"] > pages // 2  # each repeat maps and touches fresh pages
    assert kept["faults"] < pages // 20  # the freed buffer's pages are reused


@pytest.mark.parametrize(
    "environ",
    [
        {"CSDN_MALLOC": "default"},
        {"MALLOC_MMAP_THRESHOLD_": "65536"},
        {"MALLOC_ARENA_MAX": "2"},
        {"GLIBC_TUNABLES": "glibc.malloc.x=1"},
    ],
)
def test_the_users_own_choice_stands(environ):
    assert keep_freed_memory(environ) is False


def test_only_the_command_owning_its_process_applies_it(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(app, "keep_freed_memory", lambda: calls.append(1) or True)
    assert app.main(["models"]) == 0  # a caller passing argv keeps its process as it is
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["csdn", "models"])
    assert app.main() == 0
    assert calls == [1]
    capsys.readouterr()
