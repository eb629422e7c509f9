"""xmodlm bench's bookkeeping (the side-by-side timing itself: tests/test_cli.py, tests/test_no_bf16_kernels.py)."""

from __future__ import annotations

import pytest
import torch

from xmodlm.recipes import bench


def test_mfu_is_against_the_faster_of_the_ceilings_measured_before_and_after(monkeypatch):
    """A machine slowed while the ceiling is first measured must not inflate every MFU: the ceiling is measured again
    after the suites and the faster reading is the one every row's MFU is against."""
    readings = iter([1e9, 3e9, 2e9, 4e9, 5e9, 6e9])  # fp32 then bf16 (where it runs), before then after

    def fake_ceiling(dtype, n=2048, k=1024, m=1024, steps=20):
        return {"torch.mm": next(readings)} if n == 2048 else {"torch.mm": 1e8}
    monkeypatch.setattr(bench, "matmul_ceiling", fake_ceiling)
    results = bench.run(bench.BenchSettings(suite=["train"], steps=1, warmup=0, quick=True))
    ceilings = {"fp32": 2e9, "bf16": 4e9} if bench.bf16_products() else {"fp32": 3e9}
    timed = [r for r in results if r.get("flops")]
    assert timed and all(r["mfu"] == pytest.approx(r["flops"] / r["seconds"] / ceilings[r["dtype"]]) for r in timed)
    rows = {r["impl"]: r["vs"] for r in results if r["shape"].startswith("dense matmul ceiling")}
    assert rows["fp32 torch.mm"] == f"{ceilings['fp32'] / 1e9:,.0f} GFLOP/s (the ceiling)"


@pytest.mark.slow
def test_the_memory_suite_reads_each_childs_own_peak_not_the_benchs():
    """Each implementation's peak is its own process's: a bench that already holds more memory than either child
    (here 3 GB; in a full run, the inference suite's models) must not report its own peak for both (ru_maxrss keeps
    the forking parent's peak across exec; round 13's run read the same 8.92 GiB for both)."""
    held = torch.ones(3 * 2 ** 30 // 4)  # touched: resident in this process
    rows = {r["impl"]: r["bytes"] for r in bench.bench_memory(bench.BenchSettings(suite=["memory"], quick=True))}
    assert set(rows) == {"reference", "ours"}
    assert all(0 < b < held.numel() * 4 for b in rows.values()), rows
    assert rows["reference"] != rows["ours"]
