"""benchmarks/perf.py's scale harness on a tiny random model: rows, per-chunk memory, report."""

from __future__ import annotations

import pytest
from conftest import benchmark_module


@pytest.fixture(scope="module")
def perf():
    return benchmark_module("perf", "snli")


def test_scale_row_records_each_chunks_memory(perf, tmp_path):
    (row,) = perf.scale_section(tmp_path, default_sizes=[], tiny_sizes=[3000])
    assert (row["model"], row["items"]) == ("tiny-2-layer", 3000)
    chunks = row["chunks"]
    assert chunks, "no chunk was seen while the judge ran"
    numbers = [c["chunk"] for c in chunks]
    assert numbers == sorted(set(numbers)) and numbers[0] >= 2  # loading's chunk left out
    assert numbers[-1] <= 12  # 3,000 items are 12 chunks of 256
    for c in chunks:  # the RSS is read with the mark, which it cannot exceed
        assert 0 < c["rss_mb"] <= c["chunk_peak_mb"]
    # chunk records are rounded to 0.1 MB: compare within that rounding
    assert row["peak_rss_mb"] >= max(c["chunk_peak_mb"] for c in chunks) - 0.05
    assert row["judging_rss_mb"] >= max(c["rss_mb"] for c in chunks) - 0.05


def test_chunk_memory_compares_first_and_last_tenth(perf, tmp_path):
    chunks = [{"chunk": k, "rss_mb": 700.0, "chunk_peak_mb": 900.0 + 90 * (k >= 20)}
              for k in range(2, 22)]
    rows = [{"model": "m", "dtype": "bfloat16", "items": 5376, "chunks": chunks},
            {"model": "m", "dtype": "bfloat16", "items": 1000, "chunks": chunks[:3]}]
    lines = perf.chunk_memory_lines(rows)
    (line,) = [x for x in lines if x.startswith("| m |")]  # runs under 20 chunks left out
    assert "| 20 | 700 → 700 (+0.0%) | 900 → 990 (+10.0%) | 990 |" in line
    assert perf.plot_scale_memory(rows, tmp_path / "plots" / "scale.png")
    assert (tmp_path / "plots" / "scale.png").stat().st_size > 0
