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


@pytest.mark.parametrize(("dtype", "amx", "warns"), [("bfloat16", False, True),
                                                     ("bfloat16", True, False),
                                                     ("float32", False, False)])
def test_bf16_warns_only_where_it_is_emulated(monkeypatch, recwarn, dtype, amx, warns):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    models.warn_if_bf16_emulated(dtype, "judging", "pass float32")
    messages = [str(w.message) for w in recwarn]
    assert messages == (["bf16 is emulated on this cpu device (a CPU without AMX): judging runs "
                         "several times slower than in float32; pass float32"] if warns else [])


@pytest.mark.parametrize(("device", "native"), [(None, True), ("cuda", True), ("cuda:0", True),
                                                 ("cpu", False)])
def test_bf16_native_is_judged_on_the_device_asked_for(monkeypatch, device, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a bf16 GPU, a CPU without AMX
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert models.bf16_is_native(device) == native


def test_a_cpu_forced_on_a_gpu_machine_warns_about_bf16(monkeypatch, recwarn):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    models.warn_if_bf16_emulated("bfloat16", "judging", "pass float32")  # the GPU: native
    assert not recwarn
    models.warn_if_bf16_emulated("bfloat16", "judging", "pass float32", "cpu")
    assert [str(w.message)[:58] for w in recwarn] == [
        "bf16 is emulated on this cpu device (a CPU without AMX): j"]


def test_a_gpu_without_bf16_is_named_in_the_warning(monkeypatch, recwarn):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    models.warn_if_bf16_emulated("bfloat16", "training", "pass float32")
    assert [str(w.message)[:57] for w in recwarn] == [
        "bf16 is emulated on this cuda device (a GPU without bf16)"]


@pytest.mark.parametrize("gpu", [False, True])  # with a bf16 GPU, device="cpu" forces the CPU
def test_a_bf16_judge_on_a_cpu_without_native_bf16_warns(monkeypatch, tiny_model, gpu):
    from distjudge.judge import Judge

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.warns(UserWarning, match="judging runs several times slower.*--dtype float32"):
        judge = Judge.from_pretrained(str(tiny_model), "nli", dtype="bfloat16", device="cpu")
    assert judge.dtype == "bfloat16"  # a warning, not a refusal: the user may want bf16 numbers
