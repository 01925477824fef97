"""The distributional judge: items in, one label distribution per item out.

    judge = Judge.from_pretrained(task="nli")              # default model, zero-shot
    result = judge.predict(items)                          # result.probs: [N, C] numpy array
    judge.judge_file("items.jsonl", "judged.jsonl")        # streaming, resumable, atomic

``judge_file`` validates the whole input first (nothing is written on bad input), then works in
fixed chunks: each chunk is cut into batches (shared prompt prefixes run once, the rest in
length buckets: :mod:`distjudge.batching`), judged, and written atomically to
``<output>.parts/``. A killed run, rerun with the same arguments, skips the finished chunks; the
parts are joined into ``<output>`` at the end, with the run signature beside it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from distjudge.batching import plan_batches
from distjudge.data import check_file, read_items
from distjudge.io import atomic_write_json, atomic_write_text, jsonl_text
from distjudge.metrics import entropy, js_divergence
from distjudge.models import (
    file_sha256,
    folder_sha256,
    load_model,
    model_fingerprint,
    resolve_device,
    torch_dtype,
    warn_if_bf16_emulated,
)
from distjudge.readout import (
    answer_logits,
    autocast,
    can_share_prefix,
    encode_prompts,
    label_index_tensor,
    label_log_probs,
    label_token_ids,
    pad_left,
    prefix_cache,
    truncate_prompt,
)
from distjudge.task import Task, load_task

RUN_FILE = "distjudge_run.json"  # written by `distjudge train` into its output_dir


@dataclass
class Judgment:
    """Label distributions of N items: ``probs`` [N, C] and ``label_mass`` [N].

    A row of NaN in ``probs`` is an unscored item (the served backend saw none of its labels).
    ``details`` adds per-item output fields (the served backend's coverage figures).
    """

    labels: list[str]
    probs: np.ndarray
    label_mass: np.ndarray
    values: list[float] | None = None
    order_flip_jsd: np.ndarray | None = None
    estimator: str = "exact"
    details: list[dict] | None = None

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.probs).any(axis=1)

    @property
    def predictions(self) -> list[str | None]:
        return [self.labels[int(row.argmax())] if ok else None
                for row, ok in zip(self.probs, self.scored)]

    @property
    def entropy(self) -> np.ndarray:
        return entropy(self.probs)

    @property
    def expected_scores(self) -> np.ndarray | None:
        return None if self.values is None else self.probs @ np.asarray(self.values)

    def rows(self) -> Iterator[dict]:
        """One output record per item: distribution, prediction, entropy, label mass, score."""
        scores = self.expected_scores
        for i, (dist, mass, ent, ok) in enumerate(
                zip(self.probs, self.label_mass, self.entropy, self.scored)):
            row = {
                "distribution": dict(zip(self.labels, map(float, dist))) if ok else None,
                "prediction": self.labels[int(dist.argmax())] if ok else None,
                "entropy": float(ent) if ok else None,
                "label_mass": float(mass),
                "estimator": self.estimator,
            }
            if not ok:
                row["scored"] = False
            if scores is not None:
                row["expected_score"] = float(scores[i]) if ok else None
            if self.order_flip_jsd is not None:
                row["order_flip_jsd"] = float(self.order_flip_jsd[i]) if ok else None
            if self.details is not None:
                row.update(self.details[i])
            yield row


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; elsewhere a no-op).

    Batches of varying shapes leave glibc's heap fragmented: without this, a long run's RSS
    creeps up although nothing is kept.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("distjudge", "torch", "transformers", "peft"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


class Judge:
    """A causal LM read as a distributional judge for one task.

    ``dtype`` is what the forward passes compute in. :meth:`from_pretrained` loads the weights
    in it (bf16 weights: half the memory and faster than autocast on CPU); a model passed in
    keeps its weights and runs under autocast to ``dtype``.
    """

    def __init__(self, model, tokenizer, task: Task, dtype: str = "float32",
                 batch_size: int = 16, both_orders: bool = False,
                 max_length: int | None = None, model_info: dict | None = None,
                 share_prefix: bool = True, device: str | None = None):
        torch_dtype(dtype)  # a ValueError naming the choices
        self.device = resolve_device(device)
        warn_if_bf16_emulated(dtype, "judging", "pass dtype='float32' (--dtype float32)",
                              self.device)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.task = task
        self.dtype = dtype
        self.batch_size = batch_size
        if both_orders and not task.swappable:
            raise ValueError(f"task {task.name!r} declares no swap: cannot judge both orders")
        self.both_orders = both_orders
        self.max_length = max_length
        self.share_prefix = share_prefix and can_share_prefix(model)
        self.token_ids = label_token_ids(task, tokenizer)
        self.index = label_index_tensor(self.token_ids).to(self.device)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id or 0)
        self.model_info = model_info or {}

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, task: str | Task | None = None,
                        adapter: str | Path | None = None, dtype: str = "float32",
                        **kwargs) -> Judge:
        """Load a backbone (default: the embedded SmolLM2) and, optionally, a trained run.

        ``adapter`` is a ``distjudge train`` output_dir (PEFT adapter or full model): its task
        and base model are used unless given here.
        """
        info: dict = {}
        if adapter is not None:
            run_file = Path(adapter) / RUN_FILE
            if not run_file.is_file():
                raise FileNotFoundError(f"{adapter}: not a distjudge run (no {RUN_FILE})")
            run = json.loads(run_file.read_text())
            task = task or str(Path(adapter) / "task.yaml")
            kwargs.setdefault("max_length", run.get("method", {}).get("max_length"))
            if run.get("finetuning") == "full":
                model, adapter = adapter, None
                info["run"] = str(run_file.parent)
            else:
                model = model or run.get("model")
                info["adapter"] = str(run_file.parent)
                info["adapter_sha256"] = folder_sha256(run_file.parent)
        net, tokenizer, folder = load_model(model, adapter, dtype)
        info.update(model=str(model) if model else "smollm2-135m", model_folder=str(folder),
                    model_sha256=model_fingerprint(folder))
        return cls(net, tokenizer, load_task(task or "nli"), dtype=dtype, model_info=info,
                   **kwargs)

    # -- inference ---------------------------------------------------------------------------

    @torch.inference_mode()
    def _score(self, prompts: Sequence[Sequence[int]], prefix_length: int = 0,
               prefix: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        batch = pad_left([p[prefix_length:] for p in prompts], self.pad_id, prefix_length)
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        logits = answer_logits(self.model, batch, self.compute_dtype, prefix)
        log_q, log_mass = (t.cpu() for t in label_log_probs(logits, self.index))
        q = log_q.double().exp()
        return (q / q.sum(-1, keepdim=True)).numpy(), log_mass.double().exp().numpy()

    def predict(self, items: Iterable[dict], progress: bool = False) -> Judgment:
        """Judge items (mappings with the task's fields) in length-bucketed batches.

        With ``both_orders`` each item is also judged with its pair swapped; the result is the
        mean of the two distributions (labels flipped back) and ``order_flip_jsd`` their JSD.
        """
        items = list(items)
        if not self.both_orders:
            return self._predict_one_order(items, progress)
        both = self._predict_one_order(items + [self.task.swapped(i) for i in items], progress)
        return average_orders(self.task, both, len(items))

    def _predict_one_order(self, items: list[dict], progress: bool) -> Judgment:
        prompts = [truncate_prompt(ids, self.max_length)
                   for ids in encode_prompts(self.task, self.tokenizer, items)]
        probs = np.zeros((len(items), len(self.task.labels)))
        mass = np.zeros(len(items))
        dtype = self.compute_dtype
        bar = tqdm(total=len(items), unit="item", disable=not progress, desc="judging")
        cached: tuple[tuple[int, ...], list] = ((), [])  # the last prefix's keys and values
        with autocast(self.device.type, dtype):  # each weight cast once here, not per batch
            for batch in plan_batches(prompts, self.batch_size, share_prefix=self.share_prefix):
                rows, length = batch.rows, batch.prefix_length
                if length:
                    key = tuple(prompts[rows[0]][:length])
                    if key != cached[0]:
                        cached = key, prefix_cache(self.model, key, dtype)
                probs[rows], mass[rows] = self._score([prompts[i] for i in rows], length,
                                                      cached[1] if length else None)
                bar.update(len(rows))
        bar.close()
        return Judgment(self.task.label_names, probs, mass, self.task.values)

    # -- files -------------------------------------------------------------------------------

    def signature(self, input_path: Path, chunk_size: int) -> dict:
        """Everything that determines the output: model, adapter, task, tokens, input, settings."""
        return file_signature(self.task, input_path, chunk_size, model=self.model_info,
                              label_token_ids=self.token_ids, dtype=self.dtype,
                              weights_dtype=str(next(self.model.parameters()).dtype),
                              both_orders=self.both_orders, batch_size=self.batch_size,
                              max_length=self.max_length, share_prefix=self.share_prefix)

    def judge_file(self, input_path: str | Path, output_path: str | Path,
                   chunk_size: int = 256, progress: bool = True) -> dict:
        """Judge a JSONL/CSV/Parquet file into JSONL, resumably; return a summary."""
        def judge_chunk(chunk: list[dict], journal: Path) -> list[dict]:
            rows = list(self.predict(chunk).rows())
            release_free_memory()
            return rows

        signature = self.signature(Path(input_path), chunk_size)
        return judge_file_in_chunks(input_path, output_path, self.task, signature, judge_chunk,
                                    chunk_size, progress)


def task_signature(task: Task) -> dict:
    return {"name": task.name, "fingerprint": task.fingerprint(), "labels": task.label_names}


def file_signature(task: Task, input_path: Path, chunk_size: int, **settings) -> dict:
    """A judged file's signature: task, input hash, chunking, versions, and the judge's settings."""
    return {"task": task_signature(task), "chunk_size": chunk_size,
            "input": {"path": str(input_path), "sha256": file_sha256(input_path)},
            "versions": package_versions(), **settings}


def judge_file_in_chunks(input_path: str | Path, output_path: str | Path, task: Task,
                         signature: dict, judge_chunk: Callable[[list[dict], Path], list[dict]],
                         chunk_size: int = 256, progress: bool = True) -> dict:
    """Judge a file chunk by chunk into ``<output>.parts/``, then join the parts atomically.

    ``judge_chunk(items, journal)`` returns one judged row per item; ``journal`` is a path it
    may use to keep per-item progress inside the chunk (the served backend does). A rerun with
    the same ``signature`` skips finished chunks; another signature is refused.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    n_items = check_file(input_path, task)  # all errors surface before any output
    sig_path = output_path.with_name(output_path.name + ".signature.json")
    parts = output_path.with_name(output_path.name + ".parts")
    if output_path.exists() and sig_path.is_file() and not parts.exists():
        if json.loads(sig_path.read_text()) == signature:
            return {"items": n_items, "output": str(output_path), "status": "already complete"}
    if parts.exists():
        previous = parts / "signature.json"
        if not previous.is_file() or json.loads(previous.read_text()) != signature:
            raise RuntimeError(
                f"{parts}: left by a run with other settings or input; delete it to start over"
            )
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_json(parts / "signature.json", signature)

    n_chunks = 0
    items = read_items(input_path, task, check_ids=False)  # checked above; held ids would grow
    with tqdm(total=n_items, unit="item", desc="judging", disable=not progress) as bar:
        for k, chunk in enumerate(chunked(items, chunk_size)):
            chunk_file = parts / chunk_name(k)
            n_chunks += 1
            if not chunk_file.is_file():
                journal = parts / chunk_name(k, ".journal.jsonl")
                judged = judge_chunk(chunk, journal)
                rows = [output_row(item, row) for item, row in zip(chunk, judged)]
                atomic_write_text(chunk_file, jsonl_text(rows))
                journal.unlink(missing_ok=True)
            bar.update(len(chunk))
    _join([parts / chunk_name(k) for k in range(n_chunks)], output_path)
    atomic_write_json(sig_path, signature)
    shutil.rmtree(parts)
    return {"items": n_items, "output": str(output_path), "status": "done"}


def chunk_name(k: int, suffix: str = ".jsonl") -> str:
    """File name of chunk ``k`` (or of its journal) in ``<output>.parts/``."""
    return f"chunk-{k:07d}{suffix}"


def average_orders(task: Task, both: Judgment, n: int) -> Judgment:
    """Combine the judgments of n items (rows :n) and of their swapped copies (rows n:)."""
    first, second = both.probs[:n], both.probs[n:][:, task.swap_permutation()]
    return Judgment(task.label_names, (first + second) / 2,
                    (both.label_mass[:n] + both.label_mass[n:]) / 2, task.values,
                    order_flip_jsd=js_divergence(first, second), estimator=both.estimator)


def chunked(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def output_row(item: dict, judged: dict) -> dict:
    row = {k: v for k, v in item.items() if k != "counts"}
    row.update(judged)
    return row


def _join(chunk_files: list[Path], output_path: Path) -> None:
    """Concatenate finished chunks into the output, atomically."""
    tmp = output_path.with_name(f".{output_path.name}.tmp")
    with tmp.open("wb") as out:
        for chunk_file in chunk_files:
            with chunk_file.open("rb") as fh:
                shutil.copyfileobj(fh, out)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(output_path)
