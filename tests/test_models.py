"""Backbone helpers that need no model: the bf16-or-fp32 choice."""

from __future__ import annotations

import pytest
import torch

from distjudge import models


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [
    (True, False, "bfloat16"), (False, True, "bfloat16"), (False, False, "float32")])
def test_fast_dtype_follows_the_cpu_probes(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert models.fast_dtype() == expected
    assert models.bf16_is_native() == (expected == "bfloat16")


def test_a_torch_without_the_probes_counts_as_no_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert models.fast_dtype() == "float32"
