"""distjudge: distributional LLM-as-a-judge (arXiv 2505.12301).

Read a judge's probability distribution over labels from one forward pass, train it to match
many human annotators, and evaluate how close it gets. The names below are imported lazily, so
``import distjudge`` (and the ``data`` commands) stay fast without loading torch.
"""

import os
from importlib import import_module

# On CPU, oneDNN (bf16 matmuls) and PyTorch's ideep layer each keep compiled kernels per matmul
# shape, up to 1,024: a long judge run meets ever new batch shapes and its memory keeps growing
# (pytorch/pytorch#27971). 16 bounds both: judging bf16 on the default model, each chunk's peak
# stays within 858-896 MB over 2,560 items (with 128: 946 -> 1,057 MB, still rising), at the same
# speed (benchmarks/kernel_cache.py). They are read when torch builds
# its first such kernel, so this holds unless that happened before distjudge was imported; a
# value already set wins.
KERNEL_CACHE_CAPACITY = 16
for _cache in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    os.environ.setdefault(_cache, str(KERNEL_CACHE_CAPACITY))

__version__ = "0.1.0"

_EXPORTS = {
    "Judge": "distjudge.judge",
    "Judgment": "distjudge.judge",
    "ServedJudge": "distjudge.served",
    "Task": "distjudge.task",
    "load_task": "distjudge.task",
    "evaluate": "distjudge.evaluation",
    "evaluate_file": "distjudge.evaluation",
    "DistJudgeConfig": "distjudge.trainer",
    "DistJudgeTrainer": "distjudge.trainer",
    "train": "distjudge.trainer",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'distjudge' has no attribute {name!r}")
