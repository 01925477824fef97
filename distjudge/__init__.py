"""distjudge: distributional LLM-as-a-judge (arXiv 2505.12301).

Read a judge's probability distribution over labels from one forward pass, train it to match
many human annotators, and evaluate how close it gets.
"""

from distjudge.evaluate import evaluate, evaluate_file
from distjudge.judge import Judge, Judgment
from distjudge.task import Task, load_task

__version__ = "0.1.0"
__all__ = ["Judge", "Judgment", "Task", "evaluate", "evaluate_file", "load_task", "__version__"]
