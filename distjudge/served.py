"""Judging through a served model: an OpenAI-compatible chat completions API (vLLM, llama.cpp,
hosted models), read from the top-k logprobs of the first answer token.

    judge = ServedJudge("http://127.0.0.1:8080/v1", "judge", task="nli")
    judge.judge_file("items.jsonl", "judged.jsonl")

Each item's messages are the task's (the same as the local backend renders); the server applies
its own chat template. One request per item: ``max_tokens=1, logprobs=true, top_logprobs=k``.

Readout (``estimator: top_k``). A top-k token counts for a label when its text, stripped and
case-folded, is a prefix of one of that label's words (name or verbalizer) and of no other
label's: " Ent" counts for entailment, a token that could start two labels counts for none.
Each label's share is the sum of its tokens' probabilities; ``label_mass`` is their total (the
covered label mass) and the distribution is renormalized over it. A label absent from the top-k
is bounded, per token, by the k-th probability (``kth_prob``); all the label mass that could be
missing is at most the mass outside the top-k (``missing_mass_bound`` = 1 − Σ top-k). An item
with no label in its top-k is unscored (``scored: false``, no distribution), never made uniform.

The client runs ``concurrency`` requests at a time, retries 429 / 5xx / connection errors with
exponential backoff (honouring Retry-After), and appends each finished item to the chunk's
journal, so a rerun after a kill sends no request for an item already judged.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import httpx
import numpy as np
from tqdm.auto import tqdm

from distjudge.judge import Judgment, average_orders, file_signature, judge_file_in_chunks
from distjudge.task import Task, load_task

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class ServerError(RuntimeError):
    """The server cannot be used: unreachable, wrong model, no logprobs, or a request refused."""


def label_words(task: Task) -> list[list[str]]:
    """Each label's words, stripped and case-folded: what a top-k token is matched against."""
    return [sorted({w.strip().casefold() for w in label.words() if w.strip()})
            for label in task.labels]


def token_label(token: str, words: list[list[str]]) -> int | None:
    """The label a token can only start, or None (no label, or more than one)."""
    text = token.strip().casefold()
    if not text:
        return None
    owners = [i for i, forms in enumerate(words) if any(w.startswith(text) for w in forms)]
    return owners[0] if len(owners) == 1 else None


def read_top_logprobs(top: list[dict], words: list[list[str]]) -> tuple[np.ndarray, float, dict]:
    """``(label shares [C] (NaN if none seen), covered label mass, coverage details)``."""
    shares = np.zeros(len(words))
    total = 0.0
    for entry in top:
        prob = math.exp(float(entry["logprob"]))
        total += prob
        label = token_label(str(entry["token"]), words)
        if label is not None:
            shares[label] += prob
    covered = float(shares.sum())
    details = {
        "top_k": len(top),
        "kth_prob": math.exp(min(float(e["logprob"]) for e in top)) if top else 1.0,
        "missing_mass_bound": max(0.0, 1.0 - total),
        "absent_labels": [i for i in range(len(words)) if shares[i] == 0],
    }
    probs = shares / covered if covered > 0 else np.full(len(words), np.nan)
    return probs, covered, details


class ServedJudge:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint, read as a judge."""

    def __init__(self, base_url: str, model: str, task: str | Task = "nli",
                 api_key_env: str = "OPENAI_API_KEY", top_logprobs: int = 20,
                 concurrency: int = 8, timeout: float = 60.0, max_retries: int = 5,
                 backoff: float = 0.5, both_orders: bool = False, check_model: bool = True):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.task = load_task(task)
        if both_orders and not self.task.swappable:
            raise ValueError(f"task {self.task.name!r} declares no swap: cannot judge both orders")
        self.both_orders = both_orders
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.top_logprobs = top_logprobs
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.words = label_words(self.task)
        self.requests_sent = 0
        if check_model:
            self.check_model()

    # -- HTTP ----------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def check_model(self) -> None:
        """Fail early and clearly if the server is down or does not serve ``model``."""
        url = f"{self.base_url}/models"
        try:
            response = httpx.get(url, headers=self._headers(), timeout=self.timeout)
        except httpx.HTTPError as err:
            raise ServerError(f"{url}: server unreachable ({type(err).__name__}: {err})") from err
        if response.status_code == 404:
            return  # no model list on this server: the first request will tell
        if response.status_code != 200:
            raise ServerError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
        served = [m.get("id") for m in response.json().get("data", [])]
        if served and self.model not in served:
            raise ServerError(f"{self.base_url}: model {self.model!r} is not served here; "
                              f"it serves {served}")

    async def _request(self, client, messages: list[dict]) -> list[dict]:
        """Top-k logprobs of the first answer token for one prompt, with retries."""
        url = f"{self.base_url}/chat/completions"
        body = {"model": self.model, "messages": messages, "max_tokens": 1,
                "logprobs": True, "top_logprobs": self.top_logprobs, "temperature": 1.0}
        reason, wait = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(wait)
            wait = min(self.backoff * 2 ** attempt, 30.0) * (1 + random.random() / 4)
            try:
                self.requests_sent += 1
                response = await client.post(url, json=body, headers=self._headers())
            except httpx.HTTPError as err:
                reason = f"server unreachable ({type(err).__name__}: {err})"
                continue
            if response.status_code in RETRY_STATUS:
                reason = f"HTTP {response.status_code}"
                wait = _retry_after(response.headers.get("retry-after"), wait)
                continue
            if response.status_code != 200:
                raise ServerError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
            return self._top_logprobs(response.json(), url)
        raise ServerError(f"{url}: {reason} after {self.max_retries + 1} attempts "
                          "(rerun the same command to resume)")

    @staticmethod
    def _top_logprobs(payload: dict, url: str) -> list[dict]:
        try:
            content = payload["choices"][0]["logprobs"]["content"]
            top = content[0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{url}: the response has no logprobs; the server must support "
                              "chat completions with logprobs and top_logprobs") from None
        if not top:
            raise ServerError(f"{url}: the response has empty top_logprobs")
        return top

    # -- judging -------------------------------------------------------------------------------

    def _read(self, top: list[dict]) -> tuple[np.ndarray, float, dict]:
        probs, covered, details = read_top_logprobs(top, self.words)
        details["absent_labels"] = [self.task.label_names[i] for i in details["absent_labels"]]
        return probs, covered, details

    async def _judge_all(self, prompts: list[list[dict]], done: dict[int, list[dict]],
                         on_done, progress: bool) -> dict[int, list[dict]]:
        limits = httpx.Limits(max_connections=self.concurrency)
        semaphore = asyncio.Semaphore(self.concurrency)
        results = dict(done)
        bar = tqdm(total=len(prompts), initial=len(done), unit="item", desc="requests",
                   disable=not progress, leave=False)

        async def one(i: int, client) -> None:
            async with semaphore:
                top = await self._request(client, prompts[i])
            results[i] = top
            on_done(i, top)
            bar.update(1)

        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            tasks = [asyncio.create_task(one(i, client))
                     for i in range(len(prompts)) if i not in done]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                bar.close()
        return results

    def predict(self, items: Iterable[dict], journal: Path | None = None,
                progress: bool = False) -> Judgment:
        """Judge items; ``journal`` (JSONL) keeps each answer so a rerun skips it."""
        items = list(items)
        prompts = [self.task.render(item) for item in items]
        if self.both_orders:
            prompts += [self.task.render(self.task.swapped(item)) for item in items]
        done = _read_journal(journal, len(prompts)) if journal else {}
        handle = journal.open("a") if journal else None

        def on_done(i: int, top: list[dict]) -> None:
            if handle:
                handle.write(json.dumps({"i": i, "top_logprobs": top}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

        try:
            tops = asyncio.run(self._judge_all(prompts, done, on_done, progress))
        finally:
            if handle:
                handle.close()
        read = [self._read(tops[i]) for i in range(len(prompts))]
        judgment = Judgment(self.task.label_names, np.stack([r[0] for r in read]),
                            np.array([r[1] for r in read]), self.task.values,
                            estimator="top_k", details=[r[2] for r in read])
        if not self.both_orders:
            return judgment
        n = len(items)
        both = average_orders(self.task, judgment, n)
        both.details = [{**first, "missing_mass_bound": max(first["missing_mass_bound"],
                                                            second["missing_mass_bound"])}
                        for first, second in zip(judgment.details[:n], judgment.details[n:])]
        return both

    def signature(self, input_path: Path, chunk_size: int) -> dict:
        return file_signature(self.task, input_path, chunk_size, backend="openai",
                              base_url=self.base_url, model=self.model,
                              top_logprobs=self.top_logprobs, both_orders=self.both_orders)

    def judge_file(self, input_path: str | Path, output_path: str | Path,
                   chunk_size: int = 256, progress: bool = True) -> dict:
        """Judge a file into JSONL, resumably (per item); the summary counts unscored items."""
        def judge_chunk(chunk: list[dict], journal: Path) -> list[dict]:
            return list(self.predict(chunk, journal).rows())

        summary = judge_file_in_chunks(input_path, output_path, self.task,
                                       self.signature(Path(input_path), chunk_size),
                                       judge_chunk, chunk_size, progress)
        with open(output_path) as fh:
            summary["unscored"] = sum(json.loads(line).get("scored") is False for line in fh)
        summary["requests_sent"] = self.requests_sent
        return summary


def _retry_after(header: str | None, default: float) -> float:
    try:
        return min(max(float(header), 0.0), 60.0) if header else default
    except ValueError:  # an HTTP date: fall back to our own backoff
        return default


def _read_journal(path: Path, n: int) -> dict[int, list[dict]]:
    """Answers already received for this chunk; a last line torn by a kill is cut off."""
    done: dict[int, list[dict]] = {}
    if not path.is_file():
        return done
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as fh:
            fh.truncate(len(complete))
    for line in complete.decode().splitlines():
        entry = json.loads(line)
        if 0 <= entry["i"] < n:
            done[entry["i"]] = entry["top_logprobs"]
    return done


def start_llama_server(gguf: str | Path, port: int, threads: int = 1, log: IO | None = None,
                       alias: str = "judge", timeout: float = 120.0) -> subprocess.Popen:
    """Serve ``gguf`` with llama-cpp-python on 127.0.0.1:``port`` and wait until it answers.

    For tests and benchmarks (``pip install -e ".[server]"``); the caller stops the process.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
         "--n_threads", str(threads), "--verbose", "false"],
        stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"llama.cpp server did not come up in {timeout:.0f} s")
