"""Backbone helpers that need no model: the bf16-or-fp32 choice."""

from __future__ import annotations

import pytest
import torch

from distjudge import models


@pytest.mark.parametrize(("amx", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_fast_dtype_follows_the_amx_probe(monkeypatch, amx, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert models.fast_dtype() == expected
    assert models.bf16_is_native() == amx


def test_a_torch_without_the_probe_counts_as_no_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert models.fast_dtype() == "float32"
