"""Command line: ``distjudge {judge,evaluate,train,merge,data} ...``.

Each command's options are a dataclass parsed by ``HfArgumentParser`` (flags like
``--output_dir`` or ``--output-dir``; ``train`` also takes a YAML file instead of flags). Bad
input ends in one line ``distjudge: error: ...`` and exit status 2, with no output written;
distjudge's own warnings print as one line ``distjudge: warning: ...``.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from distjudge.data import DataError, check_file
from distjudge.io import terminate_as_interrupt
from distjudge.models import ModelError
from distjudge.task import TaskError, load_task

USER_ERRORS = (DataError, TaskError, ModelError, FileNotFoundError, RuntimeError, ValueError)
PACKAGE = Path(__file__).resolve().parent


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning raised in distjudge as one line beside its errors; a library's as Python shows
    it (file, line, category)."""
    own = Path(filename).resolve().is_relative_to(PACKAGE)
    (file or sys.stderr).write(f"distjudge: warning: {message}\n" if own else
                               warnings.formatwarning(message, category, filename, lineno, line))


@dataclass
class JudgeArguments:
    """distjudge judge: read each item's label distribution from the judge."""

    input: str = field(metadata={"help": "Items to judge: .jsonl, .csv or .parquet."})
    output: str = field(
        metadata={"help": "Output JSONL (one judged row per input item); with --engine ray, "
                  "a name ending in .parquet gives one Parquet file."}
    )
    task: str | None = field(
        default=None,
        metadata={"help": "Built-in task (nli, rating, pairwise, safety) or a task YAML. "
                  "Defaults to the task stored with --adapter, else nli."},
    )
    model: str | None = field(
        default=None,
        metadata={"help": "local: HF folder or GGUF file (default: embedded SmolLM2); "
                  "openai: the served model's name."},
    )
    adapter: str | None = field(
        default=None, metadata={"help": "A `distjudge train` output_dir to judge with."}
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "float32 or bfloat16 (local engine: the weights are loaded in it)."},
    )
    batch_size: int = field(default=16, metadata={"help": "Items per forward pass."})
    device: str | None = field(
        default=None, metadata={"help": "local: torch device (cpu, cuda, cuda:1); default cuda "
                                "when available, else cpu."},
    )
    share_prefix: bool = field(
        default=True,
        metadata={"help": "Run prompt prefixes that items share (chat header, instructions, a "
                  "common source text) once and reuse their KV cache (local engine)."},
    )
    chunk_size: int = field(
        default=256,
        metadata={"help": "Items per resumable chunk written to <output>.parts/ (local), or per "
                  "Ray block sent to one worker (ray)."},
    )
    both_orders: bool = field(
        default=False,
        metadata={"help": "Pairwise tasks: judge each item in both orders and average."},
    )
    backend: str = field(
        default="local",
        metadata={"help": "local (exact readout from the model's logits) or openai (an "
                  "OpenAI-compatible server's top-k logprobs; needs --base_url and --model).",
                  "choices": ["local", "openai"]},
    )
    base_url: str | None = field(
        default=None, metadata={"help": "openai: the API root, e.g. http://127.0.0.1:8080/v1."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "openai: environment variable holding the API key (if any)."},
    )
    top_logprobs: int = field(
        default=20, metadata={"help": "openai: top logprobs per request (the server's maximum)."}
    )
    concurrency: int = field(default=8, metadata={"help": "openai: requests in flight."})
    timeout: float = field(default=60.0, metadata={"help": "openai: seconds per request."})
    max_retries: int = field(
        default=5, metadata={"help": "openai: retries on 429 / 5xx / connection errors."}
    )
    engine: str = field(
        default="local",
        metadata={"help": "local (this process, resumable) or ray (actors on a Ray cluster; "
                  "pip install distjudge[ray]).", "choices": ["local", "ray"]},
    )
    address: str | None = field(
        default=None,
        metadata={"help": "Ray: join this cluster (auto, ray://HOST:10001, HOST:6379); "
                  "default: start a local one for the run."},
    )
    num_workers: int | None = field(
        default=None,
        metadata={"help": "Ray: judge actors, each loading the model once (default: the "
                  "cluster's CPUs / --cpus_per_worker)."},
    )
    cpus_per_worker: float = field(
        default=1.0, metadata={"help": "Ray: CPUs each actor reserves (and its torch threads)."}
    )


@dataclass
class EvaluateArguments:
    """distjudge evaluate: metrics of a judged file against its human labels."""

    input: str = field(metadata={"help": "A judged JSONL file (output of distjudge judge)."})
    task: str = field(default="nli", metadata={"help": "The task the file was judged with."})
    reference: str | None = field(
        default=None, metadata={"help": "Labelled items whose label prior is a baseline."}
    )
    output: str | None = field(
        default=None, metadata={"help": "Metrics JSON (default: <input>.metrics.json)."}
    )
    plot: str | None = field(
        default=None, metadata={"help": "PNG: reliability diagram and human vs judge entropy."}
    )
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95% CIs."})
    seed: int = field(default=0, metadata={"help": "Bootstrap seed."})


def parse_command(dataclass_type, argv: list[str], prog: str):
    """One options dataclass from flags, or from a YAML file given as the only argument."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_type, prog=f"distjudge {prog}")
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        (args,) = parser.parse_yaml_file(argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(argv)
    return args


def run_judge(argv: list[str]) -> int:
    from distjudge.judge import Judge

    args = parse_command(JudgeArguments, argv, "judge")
    task = load_task(args.task or (Path(args.adapter) / "task.yaml" if args.adapter else "nli"))
    if args.backend == "openai" and (args.engine != "local" or args.adapter):
        raise ValueError("--backend openai judges through the server alone: "
                         "no --engine ray, no --adapter")
    if args.engine == "ray":  # validates the input first too; the model loads in the workers
        from distjudge.ray_engine import judge_with_ray

        summary = judge_with_ray(
            args.input, args.output, task, model=args.model, adapter=args.adapter,
            dtype=args.dtype, batch_size=args.batch_size, both_orders=args.both_orders,
            chunk_size=args.chunk_size, num_workers=args.num_workers,
            cpus_per_worker=args.cpus_per_worker, address=args.address)
        print(json.dumps(summary))
        return 0
    if Path(args.output).suffix.lower() in (".parquet", ".csv"):
        raise ValueError(f"{args.output}: this engine writes JSONL: name the output *.jsonl "
                         "(Parquet output: --engine ray)")
    check_file(args.input, task)  # bad input fails here, before the model is loaded
    if args.backend == "openai":
        print(json.dumps(_judge_served(args, task)))
        return 0
    judge = Judge.from_pretrained(args.model, task, args.adapter, dtype=args.dtype,
                                  batch_size=args.batch_size, both_orders=args.both_orders,
                                  share_prefix=args.share_prefix, device=args.device)
    summary = judge.judge_file(args.input, args.output, chunk_size=args.chunk_size)
    print(json.dumps(summary))
    return 0


def _judge_served(args: JudgeArguments, task) -> dict:
    from distjudge.served import ServedJudge

    if not args.base_url or not args.model:
        raise ValueError("--backend openai needs --base_url and --model (the served name)")
    judge = ServedJudge(args.base_url, args.model, task, api_key_env=args.api_key_env,
                        top_logprobs=args.top_logprobs, concurrency=args.concurrency,
                        timeout=args.timeout, max_retries=args.max_retries,
                        both_orders=args.both_orders)
    return judge.judge_file(args.input, args.output, chunk_size=args.chunk_size)


def run_evaluate(argv: list[str]) -> int:
    from distjudge.evaluation import evaluate_file, format_report
    from distjudge.io import atomic_write_json

    args = parse_command(EvaluateArguments, argv, "evaluate")
    report = evaluate_file(args.input, args.task, args.reference, args.n_boot, args.seed,
                           plot=args.plot)
    print(format_report(report))
    output = Path(args.output or f"{args.input}.metrics.json")
    atomic_write_json(output, report)
    print(f"metrics written to {output}" + (f", plot to {args.plot}" if args.plot else ""))
    return 0


def run_data(argv: list[str]) -> int:
    import argparse

    from distjudge.sources.cli import add_data_parser

    parser = argparse.ArgumentParser(prog="distjudge")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def run_train(argv: list[str]) -> int:
    from distjudge.trainer import main as train_main

    return train_main(argv)


def run_merge(argv: list[str]) -> int:
    from distjudge.trainer import merge_main

    return merge_main(argv)


def run_quickstart(argv: list[str]) -> int:
    from distjudge.quickstart import main as quickstart_main

    return quickstart_main(argv)


COMMANDS = {"judge": run_judge, "evaluate": run_evaluate, "train": run_train,
            "merge": run_merge, "data": run_data, "quickstart": run_quickstart}

USAGE = """usage: distjudge COMMAND [options]   (distjudge COMMAND --help for each)

commands:
  judge      read each item's label distribution from the judge (zero-shot or trained)
  evaluate   KL, JSD, TV, accuracy, ECE of a judged file against its human labels
  train      fine-tune a distributional judge (flags or a YAML config)
  merge      merge a trained LoRA adapter into a full safetensors model
  data       named multi-annotator datasets: list, stats, convert, split, subsample
  quickstart train on real data, judge held-out items, compare with the raw model (CPU minutes)
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        with terminate_as_interrupt(), warnings.catch_warnings():
            warnings.showwarning = show_warning
            return COMMANDS[argv[0]](argv[1:])
    except USER_ERRORS as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"distjudge: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distjudge: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
