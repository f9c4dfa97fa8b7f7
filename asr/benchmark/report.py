"""Benchmark outputs: a Markdown report, a CSV and a JSON of the same numbers, and a WER-vs-speed plot.

write_report(report, out_dir) -> [results.md, results.csv, results.json, wer_vs_rtf.png]
render_markdown(report, details=False) -> str    (what `asr benchmark` prints: no error analysis)
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from asr.benchmark.analysis import BenchmarkReport, Comparison, SystemResult
from asr.outputs import atomic_open, atomic_path, write_text

CSV_FIELDS = [
    "model",
    "set",
    "decoder",
    "status",
    "utterances",
    "skipped",
    "ref_words",
    "wer",
    "wer_ci_low",
    "wer_ci_high",
    "cer",
    "substitutions",
    "deletions",
    "insertions",
    "ser",
    "rtf",
    "utts_per_second",
    "decode_seconds",
    "audio_seconds",
    "peak_rss_mb",
    "rss_increase_mb",
    "peak_gpu_mb",
    "num_params",
    "device",
    "threads",
    "model_path",
    "set_path",
]


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _memory(s: SystemResult) -> str:
    text = f"{_mb(s.peak_rss_mb)} (+{_mb(s.rss_increase_mb)})"
    return text + (f", GPU {_mb(s.peak_gpu_mb)}" if s.peak_gpu_mb is not None else "")


def results_table(report: BenchmarkReport) -> list[str]:
    header = [
        "model",
        "set",
        "decoder",
        "utts",
        "WER %",
        "95% CI",
        "CER %",
        "S",
        "D",
        "I",
        "SER %",
        "RTF",
        "utt/s",
        "peak RSS MB (+decode)",
        "params",
        "status",
    ]
    rows = []
    for s in report.systems:
        r = s.rates
        rows.append(
            [
                s.model,
                s.set,
                f"`{s.decoder}`",
                str(r.sentences),
                f"{r.wer:.2f}",
                f"{s.wer_interval.low:.2f}–{s.wer_interval.high:.2f}",
                f"{r.cer:.2f}",
                str(r.substitutions),
                str(r.deletions),
                str(r.insertions),
                f"{s.ser:.1f}",
                f"{s.rtf:.4f}",
                f"{s.utts_per_second:.1f}",
                _memory(s),
                f"{s.num_params / 1e6:.2f} M",
                s.status,
            ]
        )
    return _table(header, rows)


def _comparison_rows(comps: list[Comparison]) -> list[list[str]]:
    rows = []
    for c in comps:
        p = c.result
        rows.append(
            [
                c.set,
                c.fixed,
                c.a,
                c.b,
                f"{100 * p.wer_a:.2f}",
                f"{100 * p.wer_b:.2f}",
                f"{100 * p.delta:+.2f}",
                f"{100 * p.delta_interval.low:+.2f} … {100 * p.delta_interval.high:+.2f}",
                f"{p.prob_b_better:.3f}",
                p.verdict,
            ]
        )
    return rows


def significance_section(report: BenchmarkReport) -> list[str]:
    if not report.comparisons:
        return []
    out = [
        "## Paired significance",
        "",
        f"Paired bootstrap over utterances ({report.n_bootstrap} resamples, seed {report.seed}): both systems are "
        "scored on the same resampled utterances. P(B better) is the share of resamples in which B's WER is lower "
        "than A's (Kaldi's compute-wer-bootci \"probability of improvement\"; ties count half, so identical systems "
        "give 0.5). Verdict at 95%: B better if P ≥ 0.975, A better if P ≤ 0.025. ΔWER = WER(B) − WER(A), "
        "negative when B is better.",
        "",
    ]
    for varied, fixed in (("model", "decoder"), ("decoder", "model")):
        comps = [c for c in report.comparisons if c.varied == varied]
        if comps:
            out += [f"### {varied.capitalize()}s (the first against each other; same set and {fixed})", ""]
            header = ["set", fixed, "A", "B", "WER A %", "WER B %", "ΔWER", "95% CI of Δ", "P(B better)", "verdict"]
            out += _table(header, _comparison_rows(comps)) + [""]
    return out


def breakdown_section(report: BenchmarkReport) -> list[str]:
    out = []
    for b in report.breakdowns:
        order = f"worst first for {b.sorted_by}" if b.sorted_by else "length order"
        out += [f"## WER % by {b.field}: {b.set} ({order})", ""]
        header = [b.field, "utts", "words", *b.systems]
        rows = [[r.group, str(r.utterances), str(r.ref_words), *(f"{r.wer[s]:.2f}" for s in b.systems)] for r in b.rows]
        out += _table(header, rows) + [""]
    return out


def error_analysis_section(report: BenchmarkReport) -> list[str]:
    out = [
        "## Error analysis",
        "",
        "Most frequent word errors (ref → hyp) and the utterances with the most errors, aligned: errors in upper "
        "case, `***` where a word is missing.",
        "",
    ]
    for s in report.systems:
        a = s.analysis
        out += [f"### {s.model} · {s.set} · `{s.decoder}`", ""]
        if s.rates.substitutions + s.rates.deletions + s.rates.insertions == 0:
            out += ["No word errors.", ""]
            continue
        out.append("- substitutions: " + (", ".join(f"{r} → {h} ×{n}" for r, h, n in a.substitutions) or "none"))
        out.append("- deletions: " + (", ".join(f"{w} ×{n}" for w, n in a.deletions) or "none"))
        out.append("- insertions: " + (", ".join(f"{w} ×{n}" for w, n in a.insertions) or "none"))
        out.append("")
        if a.worst:
            out.append("```")
            for w in a.worst:
                out += [
                    f"{w.id}: {w.errors} error{'s' * (w.errors != 1)} / {w.ref_words} words",
                    f"  REF: {w.aligned_ref}",
                    f"  HYP: {w.aligned_hyp}",
                ]
            out += ["```", ""]
    return out


def _threads(report: BenchmarkReport) -> str:
    counts = sorted({s.threads for s in report.systems})
    return f"{'/'.join(map(str, counts))} torch thread(s)" if counts else "no systems"


def _normalizers(report: BenchmarkReport) -> str:
    from asr.text import get_normalizer

    names = sorted({s.normalizer for s in report.systems})
    return "; ".join(f"{n}: {get_normalizer(n).description}" for n in names)


def render_markdown(report: BenchmarkReport, details: bool = True) -> str:
    skipped = sum(len(s.skipped) for s in report.systems)
    memory_note = report.systems[0].memory_note if report.systems else ""
    out = [
        "# ASR benchmark",
        "",
        f"{len(report.models)} model(s) × {len(report.sets)} set(s) × {len(report.decoders)} decoder(s) on "
        f"{report.device} ({_threads(report)}). WER, CER and SER (sentence error rate) in %, after each model's "
        f"text normaliser ({_normalizers(report)}) on references and hypotheses alike. 95% CI: percentile "
        f"bootstrap of the corpus WER over utterances ({report.n_bootstrap} resamples, seed {report.seed}). "
        "RTF = decoding time / audio duration and utt/s count the decoding only (features, encoder, search), not "
        f"audio loading. Peak RSS: {memory_note}; it includes Python, torch, the loaded model and the set's audio, "
        "and (+N) is the increase over the resident memory just before that decode. status `cached`: figures from "
        "the run that decoded it.",
        "",
        *results_table(report),
        "",
    ]
    if skipped:
        out += [f"{skipped} unreadable utterance(s) left out of the scores (see results.json).", ""]
    out += significance_section(report) + breakdown_section(report)
    if details:
        out += error_analysis_section(report)
    return "\n".join(out).rstrip() + "\n"


def _csv_row(s: SystemResult) -> dict:
    r = s.rates
    return {
        "model": s.model,
        "set": s.set,
        "decoder": s.decoder,
        "status": s.status,
        "utterances": r.sentences,
        "skipped": len(s.skipped),
        "ref_words": r.ref_words,
        "wer": round(r.wer, 4),
        "wer_ci_low": round(s.wer_interval.low, 4),
        "wer_ci_high": round(s.wer_interval.high, 4),
        "cer": round(r.cer, 4),
        "substitutions": r.substitutions,
        "deletions": r.deletions,
        "insertions": r.insertions,
        "ser": round(s.ser, 4),
        "rtf": round(s.rtf, 6),
        "utts_per_second": round(s.utts_per_second, 3),
        "decode_seconds": round(s.decode_seconds, 4),
        "audio_seconds": round(s.audio_seconds, 3),
        "peak_rss_mb": _round(s.peak_rss_mb),
        "rss_increase_mb": _round(s.rss_increase_mb),
        "peak_gpu_mb": _round(s.peak_gpu_mb),
        "num_params": s.num_params,
        "device": s.device,
        "threads": s.threads,
        "model_path": s.model_path,
        "set_path": s.set_path,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def write_csv(report: BenchmarkReport, path: Path) -> Path:
    with atomic_open(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for s in report.systems:
            w.writerow(_csv_row(s))
    return path


def report_dict(report: BenchmarkReport) -> dict:
    """Everything but the per-utterance hypotheses (those stay in the cache: they would make this file big)."""
    systems = []
    for s in report.systems:
        d = asdict(s)
        d.pop("utterances")
        d["ser"] = s.ser
        systems.append(d)
    comps = [{**asdict(c), "verdict": c.result.verdict} for c in report.comparisons]
    return {
        "settings": {
            "n_bootstrap": report.n_bootstrap,
            "seed": report.seed,
            "device": report.device,
            "models": report.models,
            "sets": report.sets,
            "decoders": report.decoders,
        },
        "systems": systems,
        "comparisons": comps,
        "breakdowns": [asdict(b) for b in report.breakdowns],
    }


def write_json(report: BenchmarkReport, path: Path) -> Path:
    return write_text(path, json.dumps(report_dict(report), indent=1, ensure_ascii=False) + "\n")


def plot_wer_vs_rtf(report: BenchmarkReport, path: Path) -> Path:
    """One subplot per set: WER against real-time factor, one point per model x decoder with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    sets = report.sets
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.5), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*Xh<>"
    for ax, set_label in zip(axes[0], sets):
        for s in (x for x in report.systems if x.set == set_label):
            c = colors[report.models.index(s.model) % len(colors)]
            m = markers[report.decoders.index(s.decoder) % len(markers)]
            yerr = [[s.rates.wer - s.wer_interval.low], [s.wer_interval.high - s.rates.wer]]
            ax.errorbar(s.rtf, s.rates.wer, yerr=yerr, fmt=m, color=c, capsize=3, label=f"{s.model} · {s.decoder}")
            ax.annotate(s.decoder, (s.rtf, s.rates.wer), textcoords="offset points", xytext=(5, 4), fontsize=7)
        rtfs = [x.rtf for x in report.systems if x.set == set_label and x.rtf > 0]
        if rtfs and max(rtfs) / min(rtfs) > 10:  # beams and greedy differ by orders of magnitude
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 1-2-5 ticks: readable values
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short log axis
        ax.set_title(set_label)
        ax.set_xlabel("real-time factor (decoding s / audio s; lower is faster)")
        ax.set_ylabel("WER % (95% bootstrap interval)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


REPORT_FILES = ("results.md", "results.csv", "results.json", "wer_vs_rtf.png")


def write_report(report: BenchmarkReport, out_dir: str | Path) -> list[Path]:
    """The report files in `out_dir` (each written atomically; `asr benchmark` checks them before decoding)."""
    out_dir = Path(out_dir)
    md = write_text(out_dir / "results.md", render_markdown(report, details=True))
    return [
        md,
        write_csv(report, out_dir / "results.csv"),
        write_json(report, out_dir / "results.json"),
        plot_wer_vs_rtf(report, out_dir / "wer_vs_rtf.png"),
    ]


# --- one system: what `asr evaluate` prints and writes -----------------------------------------------------------


def most_frequent_errors(s: SystemResult, n: int = 10) -> list[tuple[str, int]]:
    """The n most frequent errors of any kind, written "ref -> hyp", "ref -> (deleted)", "(inserted) -> hyp"."""
    a = s.analysis
    named = [(f"{r} -> {h}", c) for r, h, c in a.substitutions]
    named += [(f"{r} -> (deleted)", c) for r, c in a.deletions] + [(f"(inserted) -> {h}", c) for h, c in a.insertions]
    return sorted(named, key=lambda kv: (-kv[1], kv[0]))[:n]


def hypothesis_rows(s: SystemResult, utts: list) -> list[dict]:
    """One row per scored utterance: audio, normalised reference and hypothesis, score, errors, speaker/id."""
    rows = []
    for u in s.utterances:
        utt = utts[u.index]
        row = {"audio_filepath": utt.audio_filepath, "ref": u.ref, "hyp": u.hyp, "score": u.score}
        row.update(word_errors=u.errors, ref_words=u.ref_words)
        row.update({k: v for k, v in utt.extra.items() if k in ("speaker", "id", "offset")})
        rows.append(row)
    return rows


def write_hypotheses(path: str | Path, rows: list[dict]) -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def render_evaluation(s: SystemResult, rows: list[dict], normalizer) -> str:
    """The `asr evaluate` summary: WER with its interval, S/D/I, speed, frequent errors, WER per speaker."""
    r = s.rates
    lines = [
        f"{s.set_path}: {r.sentences} utterances, {s.decoder}",
        f"text normalisation (references and hypotheses): {normalizer.name}: {normalizer.description}",
        f"WER {r.wer:.2f}% (95% CI {s.wer_interval.low:.2f}-{s.wer_interval.high:.2f})  CER {r.cer:.2f}%  "
        f"(substitutions {r.substitutions}, deletions {r.deletions}, insertions {r.insertions}, "
        f"reference words {r.ref_words})",
        f"real-time factor {s.rtf:.4f} ({s.decode_seconds:.1f} s for {s.audio_seconds:.0f} s of audio)",
    ]
    common = most_frequent_errors(s)
    if common:
        lines.append("most frequent errors: " + ", ".join(f"{e} ({n})" for e, n in common))
    by: dict[str, list[int]] = {}  # speaker -> [word errors, reference words]
    for row in rows:
        counts = by.setdefault(str(row.get("speaker", "(none)")), [0, 0])
        counts[0] += row["word_errors"]
        counts[1] += row["ref_words"]
    if len(by) > 1:
        per = (f"{k} {100.0 * e / max(n, 1):.2f}% of {n}" for k, (e, n) in sorted(by.items()))
        lines.append("WER by speaker: " + ", ".join(per))
    if s.skipped:
        lines.append(f"{len(s.skipped)} unreadable files skipped (listed above)")
    return "\n".join(lines) + "\n"
