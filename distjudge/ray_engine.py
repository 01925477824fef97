"""Judging on a Ray cluster: ``distjudge judge ... --engine ray``.

    judge_with_ray("items.jsonl", "judged.jsonl", task=load_task("nli"), num_workers=4)

The input is read as a Ray dataset by :class:`ItemSource`, a file datasource (any file system
Ray reads: local paths, ``s3://``, ``gs://``, ...) whose one read task streams the
file through :func:`distjudge.data.read_items`, so rows are parsed and validated exactly as in a
local run and carry the same ``id`` (the row number where an item has none). Blocks of
``chunk_size`` items go through an actor pool (``map_batches`` with ``ActorPoolStrategy``): each
actor loads the judge once and returns, per item, the local judge's output row. Actors that die
are restarted by Ray and their unfinished blocks retried. The driver keeps the input order
(``preserve_order``), streams the rows into a temporary file beside the output, and renames it
into place when all rows are there: one JSONL file, or one Parquet file when the output ends with
``.parquet``. Ray is imported only here; without it ``--engine ray`` fails with one line naming
the extra (``pip install distjudge[ray]``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from distjudge.data import DataError, check_file, read_items
from distjudge.io import atomic_write_json
from distjudge.judge import chunked, output_row, package_versions, task_signature
from distjudge.models import ModelError, file_sha256
from distjudge.task import Task, TaskError, task_from_dict

INSTALL_HINT = "pip install distjudge[ray]"
PARQUET_SUFFIXES = (".parquet", ".pq")
USER_ERRORS = (DataError, TaskError, ModelError, FileNotFoundError)  # raised in workers


class EngineError(RuntimeError):
    """The Ray engine cannot run as asked; the message says what to do."""


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise EngineError(f"--engine ray needs Ray: {INSTALL_HINT}") from err
    return ray


def local_input(path: str) -> Path | None:
    """``path`` as a local file, or None for a URI of another file system (``s3://...``)."""
    return None if "://" in path else Path(path)


# -- the worker side ------------------------------------------------------------------------------

def _source_class():
    """``ItemSource``, defined once Ray is importable (its base class is Ray's)."""
    from ray.data.datasource import FileBasedDatasource

    class ItemSource(FileBasedDatasource):
        """Validated items of one JSONL/CSV/Parquet file, as blocks of JSON text rows.

        A local file is read in place; a file of another file system is first streamed to a
        temporary file on the reading node, so memory stays flat either way.
        """

        def __init__(self, path: str, task: dict, chunk_size: int, local: bool):
            super().__init__(path)
            self.uri, self.task, self.chunk_size, self.local = path, task, chunk_size, local

        def _read_stream(self, f, path: str):
            import pyarrow as pa

            task = task_from_dict(self.task)
            with tempfile.TemporaryDirectory(prefix="distjudge-") as tmp:
                source = Path(path)
                if not self.local:
                    source = Path(tmp) / source.name
                    with source.open("wb") as out:
                        shutil.copyfileobj(f, out, 1 << 22)
                try:
                    records = read_items(source, task, check_ids=not self.local)  # local: checked
                    for chunk in chunked(records, self.chunk_size):
                        items = [json.dumps(output_row(item, {})) for item in chunk]
                        yield pa.table({"item": items})
                except DataError as err:
                    raise DataError(str(err).replace(str(source), self.uri)) from None

    return ItemSource


class JudgeActor:
    """One judge per actor: loaded once, then called on blocks of items.

    A judge that cannot load (a wrong model path, a bad task) is reported with the first block
    rather than raised here: Ray would only pass the driver the traceback's text.
    """

    def __init__(self, model, task: dict, adapter, dtype: str, batch_size: int,
                 both_orders: bool, threads: int):
        import torch
        from ray.runtime_context import get_runtime_context

        from distjudge.judge import Judge

        torch.set_num_threads(threads)
        worker = {"actor": get_runtime_context().get_actor_id(),  # kept across restarts
                  "host": socket.gethostname(), "pid": os.getpid()}
        try:
            self.judge = Judge.from_pretrained(model, task_from_dict(task), adapter,
                                               dtype=dtype, batch_size=batch_size,
                                               both_orders=both_orders)
        except (*USER_ERRORS, ValueError) as err:
            self.judge, self.info = None, json.dumps({"error": str(err), "worker": worker})
            return
        self.info = json.dumps({"model": self.judge.model_info,
                                "label_token_ids": self.judge.token_ids,
                                "max_length": self.judge.max_length, "worker": worker})

    def __call__(self, batch) -> dict[str, list]:
        if self.judge is None:
            return {"row": [""] * batch.num_rows, "judge": [self.info] * batch.num_rows}
        items = [json.loads(text) for text in batch.column("item").to_pylist()]
        judgment = self.judge.predict(items)
        rows = [json.dumps(output_row(item, row), ensure_ascii=False)
                for item, row in zip(items, judgment.rows())]
        return {"row": rows, "judge": [self.info] + [None] * (len(rows) - 1)}


# -- the driver -----------------------------------------------------------------------------------

def connect(ray, address: str | None, cpus_needed: float) -> bool:
    """Join ``address`` or start a local cluster; return whether this call started Ray."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address)
    else:  # one machine: at least the CPUs the workers ask for (reads ask for none)
        ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed)),
                 include_dashboard=False)
    return True


def judge_with_ray(input_path: str | Path, output_path: str | Path, task: Task,
                   model: str | None = None, adapter: str | None = None,
                   dtype: str = "float32", batch_size: int = 16, both_orders: bool = False,
                   chunk_size: int = 256, num_workers: int | None = None,
                   cpus_per_worker: float = 1.0, address: str | None = None,
                   progress: bool = True,
                   on_batch: Callable[[int, list[dict]], None] | None = None) -> dict:
    """Judge a file on Ray into one JSONL (or ``.parquet``) file, rows in input order.

    ``num_workers`` actors (default: as many as the cluster's CPUs allow at ``cpus_per_worker``
    each) each load the model once. ``address``: an existing cluster (``auto``,
    ``ray://host:10001``); without it a local one is started and stopped. ``on_batch(items
    written, workers)`` is called after each block is written; ``workers`` lists each worker
    process seen so far as ``{"actor", "host", "pid"}`` (a restarted actor: same id, new pid).
    """
    from tqdm.auto import tqdm

    ray = import_ray()
    input_path, output_path = str(input_path), Path(output_path)
    if "://" in str(output_path):
        raise EngineError(f"{output_path}: the output must be a local path (the driver writes it)")
    if chunk_size < 1 or batch_size < 1 or cpus_per_worker <= 0:
        raise ValueError("--chunk_size, --batch_size and --cpus_per_worker must be positive")
    local = local_input(input_path)
    n_items = check_file(local, task) if local else None  # bad local input: no Ray, no output
    uri = str(local.resolve()) if local else input_path
    started = connect(ray, address, (num_workers or 1) * cpus_per_worker)
    start = time.perf_counter()
    tmp = output_path.with_name(f".{output_path.name}.ray.tmp")
    try:
        cluster_cpus = ray.cluster_resources().get("CPU", 0)
        if num_workers is None:
            num_workers = max(1, int(cluster_cpus // cpus_per_worker))
        if num_workers * cpus_per_worker > cluster_cpus:
            warnings.warn(f"{num_workers} workers x {cpus_per_worker:g} CPUs is more than the "
                          f"cluster's {cluster_cpus:g} CPUs: the run waits for the cluster to grow",
                          stacklevel=2)
        source = _source_class()(uri, task.to_dict(), chunk_size, local is not None)
        ds = ray.data.read_datasource(source, num_cpus=0).map_batches(
            JudgeActor, batch_size=chunk_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=cpus_per_worker,
            fn_constructor_kwargs=dict(
                model=model, task=task.to_dict(), adapter=adapter, dtype=dtype,
                batch_size=batch_size, both_orders=both_orders,
                threads=max(1, int(cpus_per_worker))),
        )  # Ray Data's actor defaults: a dead actor is restarted and its blocks retried
        ds.context.execution_options.preserve_order = True
        ds.context.enable_progress_bars = False
        output_path.parent.mkdir(parents=True, exist_ok=True)
        written, judges, workers = 0, {}, []
        with (tmp.open("w", encoding="utf-8") as out,
              tqdm(total=n_items, unit="item", desc="judging (ray)", disable=not progress) as bar):
            for block in _unwrapped(ray, ds.iter_batches(batch_size=None, batch_format="pyarrow")):
                for info in filter(None, block.column("judge").to_pylist()):
                    info = json.loads(info)
                    if "error" in info:
                        raise EngineError(f"a worker could not load the judge: {info['error']}")
                    worker = info.pop("worker")
                    if worker not in workers:
                        workers.append(worker)
                    same = {k: v for k, v in info["model"].items() if k != "model_folder"}
                    judges[json.dumps([same, info["label_token_ids"]], sort_keys=True)] = info
                rows = block.column("row").to_pylist()
                out.write("".join(row + "\n" for row in rows))
                written += len(rows)
                bar.update(len(rows))
                if on_batch is not None:
                    on_batch(written, list(workers))
            out.flush()
            os.fsync(out.fileno())
        if n_items is not None and written != n_items:
            raise EngineError(f"{input_path}: {n_items} items in, {written} rows out")
        if len(judges) > 1:
            raise EngineError("the workers loaded different models or tokenizers: "
                              + " | ".join(judges))
        if output_path.suffix.lower() in PARQUET_SUFFIXES:
            parquet_tmp = tmp.with_suffix(".parquet")
            try:
                jsonl_to_parquet(tmp, parquet_tmp, chunk_size)
                parquet_tmp.replace(output_path)
            finally:
                parquet_tmp.unlink(missing_ok=True)
        else:
            tmp.replace(output_path)
        seconds = time.perf_counter() - start
    finally:
        tmp.unlink(missing_ok=True)
        if started:
            ray.shutdown()
    judge = next(iter(judges.values()), {})
    signature = {
        "engine": "ray",
        "model": judge.get("model"),
        "task": task_signature(task),
        "label_token_ids": judge.get("label_token_ids"),
        "dtype": dtype,
        "both_orders": both_orders,
        "batch_size": batch_size,
        "max_length": judge.get("max_length"),
        "chunk_size": chunk_size,
        "input": {"path": input_path, "sha256": file_sha256(local) if local else None},
        "versions": {**package_versions(), "ray": ray.__version__},
    }
    atomic_write_json(output_path.with_name(output_path.name + ".signature.json"), signature)
    return {"items": written, "output": str(output_path), "status": "done", "engine": "ray",
            "num_workers": num_workers, "workers_seen": len(workers),
            "seconds": round(seconds, 3)}


def _unwrapped(ray, blocks):
    """Blocks of a Ray iterator; a user error raised in a worker is re-raised as itself."""
    try:
        yield from blocks
    except Exception as err:
        cause = err
        while cause is not None and (isinstance(cause, ray.exceptions.RayError)
                                     or not isinstance(cause, USER_ERRORS)):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is None:
            raise
        raise cause.with_traceback(None) from None


def jsonl_to_parquet(jsonl: Path, parquet: Path, rows_per_group: int) -> None:
    """Stream a JSONL file into one Parquet file; the schema is unified over all rows first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def groups():
        with jsonl.open(encoding="utf-8") as fh:
            yield from chunked((json.loads(line) for line in fh), rows_per_group)

    def inferred(rows: list[dict]) -> pa.Schema:  # from_pylist alone sees the first row's keys
        keys = dict.fromkeys(key for row in rows for key in row)
        return pa.Table.from_pydict({k: [row.get(k) for row in rows] for k in keys}).schema

    schema = pa.unify_schemas([inferred(rows) for rows in groups()], promote_options="permissive")
    with pq.ParquetWriter(parquet, schema) as writer:
        for rows in groups():
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
