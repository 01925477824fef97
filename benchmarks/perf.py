"""Performance in one run: one-pass readout against the alternatives, the machine's matmul bound,
training steps, scale and precision. Run it alone on the machine (timings share the cores).

    python benchmarks/perf.py --default_sizes 100,1000,10000   # ~35 min on the 2-core machine
    python benchmarks/perf.py --sections scale                  # the scale alone, to 10^5: ~2.2 h
    python benchmarks/perf.py --sections scale --tiny_sizes ''  # the default model's rows alone

Times are for a 2-core CPU with AMX; without AMX bf16 runs at ~0.55x, so there the scale section
judges in fp32 (``--scale_dtype auto``; 10^5 items: ~2.3 h).

1. Readout, on real items of ChaosNLI-SNLI (nli, 3 labels), DICES (safety, 3) and DialSummEval
   coherence (rating, 5), default model, fp32: our one-pass readout, which runs the prompt prefix
   items share once (distjudge.batching), and the same without sharing; per-option continuation
   scoring (one scored continuation per label, each its own sequence, as lm-evaluation-harness
   scores multiple choice); sampling 20 answers per item and counting labels (as G-Eval does), with
   HF ``generate`` (20 sequences per call, KV cache, just enough new tokens to spell the longest
   label). The raw model rarely answers with a label, so the first answer token is restricted to
   the label tokens: its labels are drawn from exactly our distribution, and the KL between the
   20-sample estimate (add-1/2 smoothed) and ours is pure sampling noise. Sampling runs on the
   first ``--sampled`` items; its ratio is against our readout timed on those same items (their
   length differs from the mean of all).
2. Matmul bound: this CPU's fp32 and bf16 matmul FLOP/s, measured here; bound = peak FLOP/s / (2 *
   params * tokens per item, the tokens our readout computes), and a stricter one counting only the
   FLOPs done (embedding lookups are not matmuls; the LM head runs at one position); a profile of
   one batch.
3. Training step of each objective (benchmarks/train_step.py), bf16 full fine-tuning, batch 8.
4. Scale: ``distjudge judge`` as a subprocess on 10^2..10^5 SNLI items (20,000 distinct ones,
   replicated beyond): wall time, peak RSS, RSS while judging, and each chunk's RSS and own
   peak (does memory drift as chunks pass?). The default model's 10^5 items
   take ~1.9 h on 2 cores (``--default_sizes`` leaves them out; ``--sections scale`` re-measures
   the scale alone, keeping the other sections); a 2-layer random model with the same tokenizer
   runs all sizes, measuring the pipeline.
5. Precision: our readout in fp32, with bf16 weights (``--dtype bfloat16``) and with bf16
   autocast over fp32 weights, and the KL between them.

Writes benchmarks/results/perf.json and perf.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from distjudge import KERNEL_CACHE_CAPACITY
from distjudge.batching import plan_batches
from distjudge.io import atomic_write_json, atomic_write_text, jsonl_text
from distjudge.judge import Judge
from distjudge.metrics import kl_divergence
from distjudge.models import cpu_has_amx, fast_dtype, load_model, save_tiny_model
from distjudge.readout import encode_prompts, pad_left, truncate_prompt
from distjudge.sources import get_source, load_source
from distjudge.task import load_task

sys.path.insert(0, str(Path(__file__).parent))
from quality_report import pyplot, save_figure  # noqa: E402
from train_step import measure_steps  # noqa: E402

DATASETS = ("chaosnli-snli", "dices", "dialsummeval-coherence")
MAX_LENGTH = 512


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# -- 1. readout and its alternatives ------------------------------------------------------------

@torch.inference_mode()
def per_option_probs(judge: Judge, prompts: list[list[int]], batch_size: int) -> np.ndarray:
    """Softmax over labels of log P(label name | prompt), one sequence per (item, label)."""
    conts = [judge.tokenizer.encode(label.name, add_special_tokens=False)
             for label in judge.task.labels]
    seqs = [(i, k) for i in range(len(prompts)) for k in range(len(conts))]
    seqs.sort(key=lambda ik: len(prompts[ik[0]]) + len(conts[ik[1]]))
    scores = np.zeros((len(prompts), len(conts)))
    for start in range(0, len(seqs), batch_size):
        rows = seqs[start:start + batch_size]
        batch = pad_left([prompts[i] + conts[k] for i, k in rows], judge.pad_id)
        keep = max(len(conts[k]) for _, k in rows) + 1
        log_p = judge.model(**batch, logits_to_keep=keep, use_cache=False).logits.float()
        log_p = log_p.log_softmax(-1)
        for r, (i, k) in enumerate(rows):
            cont = torch.tensor(conts[k])
            steps = log_p[r, keep - 1 - len(cont):keep - 1]  # positions predicting cont
            scores[i, k] = steps.gather(-1, cont[:, None]).sum().item()
    scores -= scores.max(axis=1, keepdims=True)
    return np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)


class FirstTokenAmong(LogitsProcessor):
    """Restrict the first generated token to ``allowed`` (the label tokens); later ones free."""

    def __init__(self, allowed: list[int], prompt_length: int):
        self.allowed = torch.tensor(allowed)
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] != self.prompt_length:
            return scores
        masked = torch.full_like(scores, -float("inf"))
        masked[:, self.allowed] = scores[:, self.allowed]
        return masked


@torch.inference_mode()
def sampled_counts(judge: Judge, prompts: list[list[int]], n: int, seed: int) -> np.ndarray:
    """Labels of ``n`` sampled answers per item (first answer token restricted to labels)."""
    owner = {t: c for c, ids in enumerate(judge.token_ids) for t in ids}
    longest = max(len(judge.tokenizer.encode(label.name, add_special_tokens=False))
                  for label in judge.task.labels)  # an answer long enough to spell any label
    config = GenerationConfig(do_sample=True, max_new_tokens=longest, num_return_sequences=n,
                              temperature=1.0, top_k=0, top_p=1.0, pad_token_id=judge.pad_id)
    torch.manual_seed(seed)
    counts = np.zeros((len(prompts), len(judge.token_ids)))
    for i, prompt in enumerate(prompts):  # one item at a time: n sequences per generate call
        batch = pad_left([prompt], judge.pad_id)
        out = judge.model.generate(input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"],
                                   generation_config=config, logits_processor=LogitsProcessorList(
                                       [FirstTokenAmong(sorted(owner), len(prompt))]))
        for token in out[:, len(prompt)].tolist():  # the first answer token names the label
            counts[i, owner[token]] += 1
    return counts


def computed_tokens(prompts: list[list[int]], batch_size: int, share_prefix: bool) -> float:
    """Tokens per item our readout runs through the model: padding included, each shared
    prefix once (as :class:`Judge` runs them)."""
    total, last = 0, ()
    for batch in plan_batches(prompts, batch_size, share_prefix=share_prefix):
        prefix = tuple(prompts[batch.rows[0]][:batch.prefix_length])
        if prefix and prefix != last:
            total, last = total + len(prefix), prefix
        total += len(batch.rows) * max(len(prompts[r]) - len(prefix) for r in batch.rows)
    return total / len(prompts)


def readout_section(model, model_bf16, tokenizer, dataset: str, n_items: int, n_sampled: int,
                    batch_size: int) -> dict:
    """Our readout (fp32; bf16 weights as ``Judge.from_pretrained`` loads them; bf16 autocast
    over the fp32 weights; fp32 without prefix sharing) against per-option scoring and sampling."""
    task = load_task(get_source(dataset).task)
    items = load_source(dataset)[:n_items]
    settings = {"task": task, "batch_size": batch_size, "max_length": MAX_LENGTH}
    judge = Judge(model, tokenizer, **settings)
    plain = Judge(model, tokenizer, share_prefix=False, **settings)
    readers = {"readout_float32": judge,
               "readout_bfloat16": Judge(model_bf16, tokenizer, dtype="bfloat16", **settings),
               "readout_bfloat16_autocast": Judge(model, tokenizer, dtype="bfloat16", **settings),
               "readout_no_prefix_float32": plain}
    prompts = [truncate_prompt(ids, MAX_LENGTH)
               for ids in encode_prompts(task, tokenizer, items)]
    out: dict = {"task": task.name, "labels": len(task.labels), "items": len(items),
                 "mean_prompt_tokens": float(np.mean([len(p) for p in prompts])),
                 "computed_tokens": computed_tokens(prompts, batch_size, True),
                 "computed_tokens_no_prefix": computed_tokens(prompts, batch_size, False)}
    for key, reader in readers.items():
        reader.predict(items[:batch_size])  # warm-up: kernels for this dtype
        result, seconds = timed(lambda: reader.predict(items))  # noqa: B023
        out[key] = {"items_per_s": len(items) / seconds, "probs": result.probs}
    exact = out["readout_float32"]["probs"]
    for name, key in (("bf16", "readout_bfloat16"), ("bf16_autocast", "readout_bfloat16_autocast")):
        out[f"kl_fp32_{name}"] = float(kl_divergence(exact, out[key]["probs"]).mean())
    out["max_abs_diff_prefix_vs_no_prefix"] = float(
        np.abs(exact - out["readout_no_prefix_float32"]["probs"]).max())

    per_option, seconds = timed(lambda: per_option_probs(judge, prompts, batch_size))
    out["per_option"] = {"items_per_s": len(items) / seconds,
                         "kl_exact_vs_per_option": float(kl_divergence(exact, per_option).mean())}
    k = min(n_sampled, len(items))
    _, seconds = timed(lambda: judge.predict(items[:k]))  # ours on the very items sampled
    readout_sampled = k / seconds
    _, seconds = timed(lambda: plain.predict(items[:k]))
    plain_sampled = k / seconds
    counts, seconds = timed(lambda: sampled_counts(judge, prompts[:k], 20, seed=0))
    smoothed = (counts + 0.5) / (counts.sum(1, keepdims=True) + 0.5 * counts.shape[1])
    out["sampling"] = {"items": k, "samples_per_item": 20, "items_per_s": k / seconds,
                       "readout_items_per_s": readout_sampled,
                       "readout_no_prefix_items_per_s": plain_sampled,
                       "mean_prompt_tokens": float(np.mean([len(p) for p in prompts[:k]])),
                       "kl_exact_vs_sampled": float(kl_divergence(exact[:k], smoothed).mean()),
                       "kl_sampled_vs_exact": float(
                           kl_divergence(counts / counts.sum(1, keepdims=True), exact[:k]).mean())}
    fp32 = out["readout_float32"]["items_per_s"]
    no_prefix = out["readout_no_prefix_float32"]["items_per_s"]
    out["readout_vs_per_option"] = fp32 / out["per_option"]["items_per_s"]
    out["readout_no_prefix_vs_per_option"] = no_prefix / out["per_option"]["items_per_s"]
    out["readout_vs_sampling"] = readout_sampled / out["sampling"]["items_per_s"]
    out["readout_no_prefix_vs_sampling"] = plain_sampled / out["sampling"]["items_per_s"]
    for key in readers:
        del out[key]["probs"]
    print(f"[readout] {dataset}: ours {fp32:.2f} items/s (no prefix sharing {no_prefix:.2f}, "
          f"bf16 {out['readout_bfloat16']['items_per_s']:.2f}), per-option "
          f"{out['per_option']['items_per_s']:.2f} ({out['readout_vs_per_option']:.1f}x), "
          f"sampling-20 {out['sampling']['items_per_s']:.3f} ({out['readout_vs_sampling']:.1f}x), "
          f"KL(exact||20 samples) {out['sampling']['kl_exact_vs_sampled']:.3f}", flush=True)
    return out


# -- 2. the machine's limit ---------------------------------------------------------------------

def matmul_flops(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def flops_per_item(model, tokens: float) -> dict:
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    layers, hidden = config.num_hidden_layers, config.hidden_size
    strict = (2 * (params - embedding) * tokens  # every linear layer, every token
              + 2 * embedding  # the LM head (tied to the embedding), at the answer position only
              + 2 * layers * tokens**2 * hidden)  # attention scores and mixing, causal half
    return {"params": params, "embedding_params": embedding, "issue": 2 * params * tokens,
            "strict": strict}


def profile_batch(judge: Judge, items: list[dict]) -> tuple[str, dict]:
    from torch.profiler import ProfilerActivity, profile

    judge.predict(items)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        judge.predict(items)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events
                 if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul",
                              "aten::linear", "aten::_scaled_dot_product_flash_attention_for_cpu"))
    table = events.table(sort_by="self_cpu_time_total", row_limit=12)
    return table, {"matmul_share_of_self_cpu": matmul / total}


# -- 4. scale -----------------------------------------------------------------------------------

# Run in a fresh interpreter: argv = the judge's parts folder, then its command. Each time a
# chunk file appears, the child's RSS and its high-water mark since the last chunk are read, and
# the mark is reset (``/proc/PID/clear_refs`` 5): each chunk's own peak. The process's peak RSS
# (model loading included) is the largest of those marks and the one the kernel reports at exit
# (RUSAGE_CHILDREN, which the resets also lower). "Judging RSS" is the largest RSS sampled every
# 0.2 s once the first chunk is written: memory while judging, after the model is loaded.
RUN_MEASURED = """
import json, pathlib, resource, subprocess, sys, time
parts, started, judging = pathlib.Path(sys.argv[1]), time.perf_counter(), None
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
chunks, marks = [], []
def read_status():
    with open(f"/proc/{child.pid}/status") as status:
        kb = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status
              if line.startswith(("VmRSS", "VmHWM"))}
    return kb["VmRSS"], kb["VmHWM"]
while child.poll() is None:
    try:
        done = sum(1 for _ in parts.glob("chunk-*.jsonl")) if parts.is_dir() else 0
        if judging is not None or done:
            rss, hwm = read_status()
            judging = max(judging or 0.0, rss)
            if done > (chunks[-1]["chunk"] if chunks else 0):  # chunks may land 2 per poll
                with open(f"/proc/{child.pid}/clear_refs", "w") as clear:
                    clear.write("5")
                marks.append(hwm)
                chunks.append({"chunk": done, "seconds": round(time.perf_counter() - started, 1),
                               "rss_mb": round(rss, 1), "chunk_peak_mb": round(hwm, 1)})
    except (OSError, KeyError):
        pass
    time.sleep(0.2)
at_exit = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": child.returncode, "seconds": time.perf_counter() - started,
                  "peak_rss_mb": max([at_exit, *marks]), "judging_rss_mb": judging,
                  "chunks": chunks[1:]}))
"""


def judge_subprocess(input_path: Path, output: Path, model: str | None, dtype: str) -> dict:
    command = [sys.executable, "-m", "distjudge", "judge", "--input", str(input_path),
               "--output", str(output), "--dtype", dtype]
    if model:
        command += ["--model", model]
    parts = output.with_name(output.name + ".parts")
    result = subprocess.run([sys.executable, "-c", RUN_MEASURED, str(parts), *command],
                            capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout)
    if measured["rc"] != 0:
        raise RuntimeError(f"distjudge judge failed on {input_path} (exit {measured['rc']})")
    return measured


def cpu_info() -> str:
    return Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""


def host() -> str:
    """The CPU the figures come from: machines of one name differ (AMX makes bf16 ~2x faster)."""
    name = next((line.split(":", 1)[1].strip() for line in cpu_info().splitlines()
                 if line.startswith("model name")), "unknown CPU")
    return f"{name}, {torch.get_num_threads()} threads, AMX {'yes' if cpu_has_amx() else 'no'}"


def scale_section(work: Path, default_sizes: list[int], tiny_sizes: list[int],
                  on_row: Callable[[list[dict]], None] = lambda rows: None,
                  default_dtype: str = "bfloat16") -> list[dict]:
    """`distjudge judge` timed on growing copies of SNLI; ``on_row(rows so far)`` after each."""
    base = load_source("snli")  # 20,000 distinct items: a 256-item chunk never holds a copy
    tiny = save_tiny_model(work / "tiny", hidden_size=64)
    rows = []
    for model, sizes, dtype in ((str(tiny), tiny_sizes, "float32"),
                                (None, default_sizes, default_dtype)):
        for n in sizes:
            items = [{**base[i % len(base)], "id": f"{base[i % len(base)]['id']}#{i}"}
                     for i in range(n)]
            source = work / f"items-{n}.jsonl"
            atomic_write_text(source, jsonl_text(items))
            output = work / f"judged-{n}-{'tiny' if model else 'default'}.jsonl"
            measured = judge_subprocess(source, output, model, dtype)
            assert sum(1 for _ in output.open()) == n
            row = {"model": "tiny-2-layer" if model else "smollm2-135m", "dtype": dtype,
                   "items": n, "seconds": measured["seconds"],
                   "items_per_s": n / measured["seconds"], "peak_rss_mb": measured["peak_rss_mb"],
                   "judging_rss_mb": measured["judging_rss_mb"], "host": host(),
                   "kernel_cache_capacity": int(os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]),
                   "chunks": measured["chunks"]}
            rows.append(row)
            print(f"[scale] {row['model']} {n:>6} items: {row['seconds']:.1f} s, "
                  f"{row['items_per_s']:.1f} items/s, peak RSS {row['peak_rss_mb']:.0f} MB",
                  flush=True)
            output.unlink()
            source.unlink()
            on_row(rows)
    return rows


# -- report -------------------------------------------------------------------------------------

def markdown(out: dict) -> str:
    lines = [f"# Performance (2-core CPU, {out['threads']} torch threads)", "",
             f"Regenerate: `{out['command']}` (run alone). Total wall time: "
             f"{out['total_seconds'] / 60:.1f} min.", "",
             "## Readout: one pass against the alternatives (default model, fp32)", "",
             "Ours runs the prompt prefix that items share once and reuses its KV cache (the "
             "chat header and instructions; for items of one source, the source too): "
             "*computed* is the tokens per item it runs, padding included. Beside it, the same "
             "readout with `--share_prefix false`. Per-option scoring runs one whole sequence "
             "per label (lm-evaluation-harness's general path; its HF backend can merge "
             "options that are single tokens into one pass); sampling expands each prompt into "
             "20 sequences (HF `generate`).", "",
             "| dataset | labels | tokens/item | computed | ours items/s | no sharing | "
             "per-option items/s | ratio (no sharing) | sampled items: ours items/s | "
             "sampling-20 items/s | ratio (no sharing) | KL(exact‖20 samples) | "
             "KL(exact‖per-option) | max diff sharing vs not |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in out["datasets"].items():
        lines.append(
            f"| {name} | {d['labels']} | {d['mean_prompt_tokens']:.0f} | "
            f"{d['computed_tokens']:.0f} | {d['readout_float32']['items_per_s']:.2f} | "
            f"{d['readout_no_prefix_float32']['items_per_s']:.2f} | "
            f"{d['per_option']['items_per_s']:.2f} | {d['readout_vs_per_option']:.1f}x "
            f"({d['readout_no_prefix_vs_per_option']:.1f}x) | "
            f"{d['sampling']['readout_items_per_s']:.2f} | "
            f"{d['sampling']['items_per_s']:.3f} | {d['readout_vs_sampling']:.1f}x "
            f"({d['readout_no_prefix_vs_sampling']:.1f}x) | "
            f"{d['sampling']['kl_exact_vs_sampled']:.3f} | "
            f"{d['per_option']['kl_exact_vs_per_option']:.3f} | "
            f"{d['max_abs_diff_prefix_vs_no_prefix']:.1e} |")
    lines += ["", "## Precision: fp32 against bf16 (our readout)", "",
              "*bf16* is what `--dtype bfloat16` runs: weights loaded in bf16 "
              "(`Judge.from_pretrained`). *bf16 autocast* keeps the fp32 weights and autocasts "
              "the matmuls (what a `Judge` built on an fp32 model does).", "",
              "| dataset | fp32 items/s | bf16 items/s | speed-up | mean KL(fp32‖bf16) | "
              "bf16 autocast items/s | speed-up | mean KL(fp32‖autocast) |",
              "|---|---|---|---|---|---|---|---|"]
    for name, d in out["datasets"].items():
        fp32, bf16 = d["readout_float32"]["items_per_s"], d["readout_bfloat16"]["items_per_s"]
        auto = d["readout_bfloat16_autocast"]["items_per_s"]
        lines.append(f"| {name} | {fp32:.2f} | {bf16:.2f} | {bf16 / fp32:.2f}x | "
                     f"{d['kl_fp32_bf16']:.1e} | {auto:.2f} | {auto / fp32:.2f}x | "
                     f"{d['kl_fp32_bf16_autocast']:.1e} |")
    b = out["bound"]
    lines += ["", "## Against the machine's matmul bound", "",
              f"Measured peak: fp32 {b['peak_gflops']['float32']:.1f} GFLOP/s, bf16 "
              f"{b['peak_gflops']['bfloat16']:.1f} GFLOP/s (2048² matmul). Model: "
              f"{b['params'] / 1e6:.1f} M parameters ({b['embedding_params'] / 1e6:.1f} M of them "
              f"the tied embedding / LM head). ChaosNLI-SNLI prompts have "
              f"{b['tokens_per_item']:.0f} tokens; the readout computes "
              f"{b['computed_tokens_per_item']:.0f} per item (shared prefix once, padding "
              "included): the bounds count those. Counting whole prompts instead, the fp32 "
              f"bound would be {b['fractions']['float32']['whole_prompt_bound_items_per_s']:.2f}"
              " items/s.", "",
              "| precision | ours items/s | bound (2·params·tokens) | fraction | "
              "strict bound (FLOPs done) | fraction |", "|---|---|---|---|---|---|"]
    for dtype, f in b["fractions"].items():
        lines.append(f"| {dtype} | {f['items_per_s']:.2f} | {f['bound_items_per_s']:.2f} | "
                     f"{100 * f['fraction']:.0f}% | {f['strict_bound_items_per_s']:.2f} | "
                     f"{100 * f['strict_fraction']:.0f}% |")
    lines += ["", f"Profile of one fp32 batch of 16 items (matmul share of self CPU time: "
              f"{100 * b['profile']['matmul_share_of_self_cpu']:.0f}%):", "", "```",
              b["profile_table"].rstrip(), "```", "",
              "What the readout already does about it: the LM head runs only at the answer "
              "position (`logits_to_keep=1`: the 28 M-parameter head costs one token, not "
              f"{b['computed_tokens_per_item']:.0f}); the shared prompt prefix runs once; "
              "batches are length-bucketed (sorted, then cut where "
              "the fewest padded tokens plus a fixed 64-token cost per forward pass are "
              "computed); no KV cache is built beyond the shared prefix's; each prompt is "
              "tokenized once; torch "
              "uses one thread per core; `--dtype bfloat16` loads the weights in bf16. What is "
              "left outside the matmuls is element-wise work (RMSNorm, SwiGLU, rotary "
              "embeddings, residual adds) that runs at memory speed.",
              "", "## Training step (bf16, full fine-tuning, batch 8, ChaosNLI-SNLI)", "",
              "| objective | s/step | adversary ms | overhead vs single point |",
              "|---|---|---|---|"]
    steps = out["train_step"]["variants"]
    base = steps["single_point"]["step_seconds"]
    for name, v in steps.items():
        lines.append(f"| {name} | {v['step_seconds']:.2f} | {1000 * v['adversary_seconds']:.1f} | "
                     f"{100 * (v['step_seconds'] / base - 1):+.1f}% |")
    lines += ["", f"Adversary time in % of a single-point step: ours "
              f"{out['adversarial_overhead_pct']:.3f}%, per-item CVXPY "
              f"{out['cvxpy_overhead_pct']:.1f}% (the paper reported +21% training time).", "",
              "## Scale: `distjudge judge` on SNLI items (20,000 distinct, replicated beyond)", "",
              "distjudge caps the caches of compiled CPU kernels that oneDNN and PyTorch's "
              f"ideep layer keep per matmul shape at {KERNEL_CACHE_CAPACITY} each "
              "(`ONEDNN_PRIMITIVE_CACHE_CAPACITY`, `LRU_CACHE_CAPACITY`; set on import unless "
              "already set; column *kernel caches*: the cap a row ran with), loads bf16 weights "
              "for `--dtype bfloat16`, reads a shared prefix's keys and values in place (no "
              "per-batch cache copy), keeps nothing per item beyond its chunk (ids are checked "
              "for repeats before judging), and hands freed heap pages back to the OS after each "
              "chunk (`malloc_trim`). *Peak RSS* is the process's high-water mark, model "
              "loading included; *judging RSS* the largest RSS sampled every 0.2 s after the "
              "first chunk was written (memory while judging; none with a single chunk).", "",
              *scale_command_lines(out),
              "| model | dtype | kernel caches | items | seconds | items/s | peak RSS MB | "
              "judging RSS MB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in out["scale"]:
        judging = r.get("judging_rss_mb")
        lines.append(f"| {r['model']} | {r['dtype']} | {kernel_caches(r)} | {r['items']:,} | "
                     f"{r['seconds']:.1f} | {r['items_per_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{'-' if judging is None else f'{judging:.0f}'} |")
    lines += chunk_memory_lines(out["scale"])
    lines += ["", "## Targets", ""] + targets(out)
    return "\n".join(lines) + "\n"


def kernel_caches(row: dict) -> int:
    """The kernel-cache cap a scale row ran with (rows from before rows recorded it: 128)."""
    return row.get("kernel_cache_capacity", 128)


def row_command(out: dict, row: dict) -> str:
    """The command that measured a scale row (rows from before rows carried it: the run's)."""
    return row.get("command") or out.get("scale_command") or out["command"]


def scale_command_lines(out: dict) -> list[str]:
    """Which command measured which scale rows, when not all came from the full run."""
    by_command: dict[str, list[dict]] = {}
    for r in out["scale"]:
        by_command.setdefault(row_command(out, r), []).append(r)
    if list(by_command) == [out["command"]]:
        return []
    running = "" if out.get("scale_complete", True) else "; still running: rows so far"
    lines = [f"- Rows of {', '.join(dict.fromkeys(r['model'] for r in rows))} measured by "
             f"`{command}` ({sum(r['seconds'] for r in rows) / 60:.1f} min of judging"
             f"{running if command == out.get('scale_command_running') else ''})"
             f"{' on ' + rows[0]['host'] if 'host' in rows[0] else ''}."
             for command, rows in by_command.items()]
    return lines + [""]


def runs_with_chunks(rows: list[dict]) -> list[dict]:
    """Scale rows with enough chunks (20) to show whether memory drifts."""
    return [r for r in rows if len(r.get("chunks", [])) >= 20]


def tenths(chunks: list[dict], key: str) -> tuple[float, float]:
    """Mean of ``key`` over the first and over the last tenth of a run's chunks."""
    k = max(1, len(chunks) // 10)
    return (float(np.mean([c[key] for c in chunks[:k]])),
            float(np.mean([c[key] for c in chunks[-k:]])))


def chunk_memory_lines(rows: list[dict]) -> list[str]:
    """Per-chunk memory of each run with at least 20 chunks: does it drift as chunks pass?"""
    runs = runs_with_chunks(rows)
    if not runs:
        return []
    lines = ["", "### Memory chunk by chunk", "",
             "Read as each 256-item chunk is written (the first chunk, which includes loading the "
             "model, left out): the RSS between chunks, and each chunk's own peak (the kernel's "
             "high-water mark, reset after every chunk). Mean of the first and of the last tenth "
             "of the chunks. Plot: [perf_plots/scale_memory.png](perf_plots/scale_memory.png).", "",
             "| model | items | chunks | RSS between chunks, first → last tenth MB | "
             "chunk peak, first → last tenth MB | highest chunk peak MB |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        chunks = r["chunks"]
        (rss0, rss1), (peak0, peak1) = tenths(chunks, "rss_mb"), tenths(chunks, "chunk_peak_mb")
        lines.append(f"| {r['model']} | {r['items']:,} | {len(chunks)} | {rss0:.0f} → {rss1:.0f} "
                     f"({100 * (rss1 / rss0 - 1):+.1f}%) | {peak0:.0f} → {peak1:.0f} "
                     f"({100 * (peak1 / peak0 - 1):+.1f}%) | "
                     f"{max(c['chunk_peak_mb'] for c in chunks):.0f} |")
    lines += ["", "![memory per chunk](perf_plots/scale_memory.png)"]
    return lines


def plot_scale_memory(rows: list[dict], path: Path) -> bool:
    """Each chunk's peak and the RSS between chunks against the items judged, per run."""
    runs = runs_with_chunks(rows)
    if not runs:
        return False
    plt = pyplot()
    models = list(dict.fromkeys(r["model"] for r in runs))
    fig, axes = plt.subplots(1, len(models), figsize=(11, 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in runs if r["model"] == model]
        for r in mine:
            chunks = r["chunks"]
            items = [256 * c["chunk"] for c in chunks]
            line, = ax.plot(items, [c["chunk_peak_mb"] for c in chunks], linewidth=1,
                            label=f"{r['items']:,} items: chunk peak")
            ax.plot(items, [c["rss_mb"] for c in chunks], linewidth=1, linestyle="--",
                    color=line.get_color(), label=f"{r['items']:,} items: RSS between chunks")
        top = max(c["chunk_peak_mb"] for r in mine for c in r["chunks"])
        ax.set(xlabel="items judged", ylabel="MB", ylim=(0, 1.15 * top),
               title=f"{model} ({mine[0]['dtype']})")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("distjudge judge: memory as chunks pass")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return True


def targets(out: dict) -> list[str]:
    """Each target of the performance issue, checked against the figures above."""
    lines = []
    for name, d in out["datasets"].items():
        k = d["labels"]
        lines.append(f"- {name}: readout {d['readout_vs_per_option']:.2f}x per-option "
                     f"(target >= {k}x: {'met' if d['readout_vs_per_option'] >= k else 'NOT met'})"
                     f", {d['readout_vs_sampling']:.1f}x sampling-20 (target >= 20x: "
                     f"{'met' if d['readout_vs_sampling'] >= 20 else 'NOT met'})")
    adv = out["adversarial_overhead_pct"]
    lines.append(f"- adversarial overhead {adv:.3f}% of a step (target <= 3%: "
                 f"{'met' if adv <= 3 else 'NOT met'})")
    frac = out["matmul_bound_fraction"]
    lines.append(f"- inference at {100 * frac:.0f}% of the matmul bound, fp32 (target >= 50%: "
                 f"{'met' if frac >= 0.5 else 'NOT met'})")
    for model in ("tiny-2-layer", "smollm2-135m"):
        rows = {r["items"]: r for r in out["scale"] if r["model"] == model}
        largest = max(rows, default=0)
        if 1000 in rows and largest > 1000:
            for key, name in (("peak_rss_mb", "peak RSS"), ("judging_rss_mb", "judging RSS")):
                small, large = rows[1000].get(key), rows[largest].get(key)
                if small is None or large is None:
                    continue
                growth = large / small - 1
                lines.append(f"- {name} of {model} from 10^3 to {largest:,} items: "
                             f"{small:.0f} -> {large:.0f} MB ({100 * growth:+.1f}%; "
                             f"flat within 5%: {'met' if growth <= 0.05 else 'NOT met'})")
            speed = {n: r["items_per_s"] for n, r in rows.items()}
            lines.append(f"  time per item from 10^3 to {largest:,} items: "
                         f"{speed[1000] / speed[largest]:.2f}x (linear time: 1.00x or less)")
    return lines


def size_list(text: str) -> list[int]:
    """``"100,1000"`` -> ``[100, 1000]``; an empty string measures no size of that model."""
    return [int(n) for n in text.split(",") if n.strip()]


def measure_scale(args, on_row: Callable[[list[dict], float], None] = lambda rows, s: None
                  ) -> tuple[list[dict], float]:
    """The scale rows and the seconds they took; ``on_row(rows so far, seconds)`` after each."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        dtype = fast_dtype() if args.scale_dtype == "auto" else args.scale_dtype
        rows = scale_section(Path(work), size_list(args.default_sizes),
                             size_list(args.tiny_sizes),
                             lambda rows: on_row(rows, time.perf_counter() - started), dtype)
    return rows, time.perf_counter() - started


def measure_all(args) -> dict:
    """Every section, in one run."""
    model, tokenizer, _ = load_model(None)
    model_bf16, _, _ = load_model(None, dtype="bfloat16")
    out: dict = {"threads": torch.get_num_threads(), "settings": vars(args), "datasets": {}}
    for dataset in DATASETS:
        out["datasets"][dataset] = readout_section(model, model_bf16, tokenizer, dataset,
                                                   args.items, args.sampled, args.batch_size)
    del model_bf16

    nli = out["datasets"]["chaosnli-snli"]
    flops = flops_per_item(model, nli["computed_tokens"])
    nominal = 2 * flops["params"] * nli["mean_prompt_tokens"]
    peak = {"float32": matmul_flops(torch.float32), "bfloat16": matmul_flops(torch.bfloat16)}
    fractions = {}
    for dtype in peak:
        ours = nli[f"readout_{dtype}"]["items_per_s"]
        bound, strict = peak[dtype] / flops["issue"], peak[dtype] / flops["strict"]
        fractions[dtype] = {"items_per_s": ours, "bound_items_per_s": bound,
                            "fraction": ours / bound, "strict_bound_items_per_s": strict,
                            "strict_fraction": ours / strict,
                            "whole_prompt_bound_items_per_s": peak[dtype] / nominal}
    judge = Judge(model, tokenizer, load_task("nli"), batch_size=args.batch_size)
    table, profile = profile_batch(judge, load_source("chaosnli-snli")[:args.batch_size])
    out["bound"] = {"peak_gflops": {k: v / 1e9 for k, v in peak.items()},
                    "tokens_per_item": nli["mean_prompt_tokens"],
                    "computed_tokens_per_item": nli["computed_tokens"], **flops,
                    "fractions": fractions, "profile": profile, "profile_table": table}
    print(f"[bound] peak fp32 {peak['float32'] / 1e9:.1f} GFLOP/s, bf16 "
          f"{peak['bfloat16'] / 1e9:.1f}; fraction fp32 {fractions['float32']['fraction']:.2f}, "
          f"bf16 {fractions['bfloat16']['fraction']:.2f}", flush=True)
    del judge, model
    out["train_step"] = measure_steps(args.steps, 8, bf16=True)
    steps = out["train_step"]["variants"]
    base = steps["single_point"]["step_seconds"]
    out["scale"], out["scale_seconds"] = measure_scale(args)
    out.update(
        readout_items_per_s=nli["readout_float32"]["items_per_s"],
        per_option_items_per_s=nli["per_option"]["items_per_s"],
        sampling_items_per_s=nli["sampling"]["items_per_s"],
        readout_vs_per_option=nli["readout_vs_per_option"],
        readout_vs_sampling=nli["readout_vs_sampling"],
        matmul_bound_fraction=fractions["float32"]["fraction"],
        adversarial_overhead_pct=100 * steps["kl_ce_adv"]["adversary_seconds"] / base,
        cvxpy_overhead_pct=100 * steps["kl_ce_adv_cvxpy"]["adversary_seconds"] / base,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64, help="Items per dataset (readout).")
    parser.add_argument("--sampled", type=int, default=16, help="Items sampled 20 times.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="Timed training steps.")
    parser.add_argument("--default_sizes", default="100,1000,10000,100000",
                        help="Item counts for the default model ('' with --sections scale: "
                        "keep its rows).")
    parser.add_argument("--tiny_sizes", default="100,1000,10000,100000",
                        help="Item counts for the tiny model ('' with --sections scale: keep "
                        "its rows).")
    parser.add_argument("--scale_dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="The default model's dtype in the scale section; auto: bfloat16 "
                        "on a CPU with AMX, else float32 (the faster one there).")
    parser.add_argument("--output", default="benchmarks/results/perf.json")
    parser.add_argument("--sections", choices=("all", "scale"), default="all",
                        help="scale: re-measure the scale section alone into the existing "
                        "--output (the others are kept).")
    parser.add_argument("--report_only", action="store_true",
                        help="Rewrite perf.md from an existing perf.json; measure nothing.")
    args = parser.parse_args(argv)
    output = Path(args.output)
    command = "python benchmarks/perf.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.report_only or args.sections == "scale":
        out = json.loads(output.read_text())
        options = " ".join(f"--{k} {v}" for k, v in out["settings"].items()
                           if k not in ("output", "report_only") and v != parser.get_default(k))
        out.setdefault("command", f"python benchmarks/perf.py {options}".strip())
        if args.sections == "scale":  # re-measure the scale alone; keep the other sections
            for r in out["scale"]:  # rows measured before rows carried their command
                r["command"] = row_command(out, r)
            for key in ("scale_command", "scale_seconds"):
                out.pop(key, None)
            sizes = {"tiny-2-layer": args.tiny_sizes, "smollm2-135m": args.default_sizes}
            kept = [r for r in out["scale"] if not size_list(sizes[r["model"]])]
            out["scale_command_running"] = command.strip()

            def save_so_far(rows: list[dict], seconds: float) -> None:  # a killed run keeps them
                out["scale"] = kept + [dict(r, command=command.strip()) for r in rows]
                out["scale"].sort(key=lambda r: (list(sizes).index(r["model"]), r["items"]))
                out["scale_complete"] = False
                write_results(output, out)

            save_so_far(*measure_scale(args, save_so_far))
            out.pop("scale_command_running")
    else:
        started = time.perf_counter()
        out = measure_all(args)
        out["total_seconds"] = time.perf_counter() - started
        out["command"] = command.strip()
        for r in out["scale"]:
            r["command"] = out["command"]
    if args.report_only:
        write_report(output, out)
    else:
        out["scale_complete"] = True
        write_results(output, out)
    print(f"written {output.with_suffix('.md')}")
    return 0


def write_results(output: Path, out: dict) -> None:
    """perf.json (``peak_rss_mb`` derived from the scale rows) and perf.md, atomically."""
    out["peak_rss_mb"] = {f"{r['model']}/{r['items']}": r["peak_rss_mb"] for r in out["scale"]}
    atomic_write_json(output, out)
    write_report(output, out)


def write_report(output: Path, out: dict) -> None:
    """perf.md and its plot beside ``output``, from the figures in ``out``."""
    plot_scale_memory(out["scale"], output.parent / "perf_plots" / "scale_memory.png")
    atomic_write_text(output.with_suffix(".md"), markdown(out))


if __name__ == "__main__":
    sys.exit(main())
