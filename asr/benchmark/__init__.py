"""Benchmark: every model x test set x decoder, scored like a scientist would want it; `asr evaluate` is one system.

run.py       run_benchmark(BenchmarkSpec) -> BenchmarkReport; evaluate(recognizer, manifest, options)
             (load the utterances, decode them whole and time it, cache)
analysis.py  score_system (WER/CER, S/D/I, error analysis), paired comparisons, breakdowns
report.py    write_report(report, out_dir) -> results.md/.csv/.json, wer_vs_rtf.png; render_markdown
"""

from asr.benchmark.analysis import (
    BenchmarkReport,
    SystemResult,
    UtteranceScore,
    aligned_pair,
    score_system,
    short_labels,
)
from asr.benchmark.run import BenchmarkSpec, Decoded, decode_set, evaluate, load_utterances, run_benchmark

__all__ = [
    "BenchmarkReport",
    "BenchmarkSpec",
    "Decoded",
    "SystemResult",
    "UtteranceScore",
    "aligned_pair",
    "decode_set",
    "evaluate",
    "load_utterances",
    "run_benchmark",
    "score_system",
    "short_labels",
]
