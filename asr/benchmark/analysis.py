"""Benchmark analysis: hypotheses -> error rates, error analysis, paired comparisons and breakdowns.

    score_system(utts, hyps, normalizer) -> (ErrorRates, per-utterance UtteranceScore, ErrorAnalysis)
    comparisons(systems, n_resamples, seed) -> paired bootstrap tests; breakdown(field, ...) -> WER per group

References and hypotheses are scored after the model's own text normaliser. asr.benchmark.run decodes and times;
asr.benchmark.report writes what this module finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jiwer

from asr.data.manifest import Utterance
from asr.metrics import ErrorRates, WordErrors, error_rates
from asr.stats import Interval, PairedComparison, paired_bootstrap
from asr.text import get_normalizer

DURATION_BUCKETS = ((2.0, "<2 s"), (5.0, "2-5 s"), (10.0, "5-10 s"), (float("inf"), ">10 s"))
TOP_K = 10  # substitutions/deletions/insertions listed per system
WORST_K = 5  # worst utterances listed per system


# --- scoring ---------------------------------------------------------------------------------------------------------


@dataclass
class UtteranceScore:
    index: int  # line in the manifest (0-based, blank lines not counted)
    id: str
    ref: str  # normalised
    hyp: str  # normalised
    errors: int
    ref_words: int
    score: float | None = None  # the hypothesis's log-probability under the decoder's scoring


@dataclass
class WorstUtterance:
    id: str
    errors: int
    ref_words: int
    ref: str
    hyp: str
    aligned_ref: str  # sclite style: errors in upper case, *** for a missing word
    aligned_hyp: str


@dataclass
class ErrorAnalysis:
    substitutions: list[tuple[str, str, int]]  # (ref word, hyp word, count), most frequent first
    deletions: list[tuple[str, int]]
    insertions: list[tuple[str, int]]
    worst: list[WorstUtterance]


@dataclass
class SystemResult:
    model: str  # short label
    set: str
    decoder: str  # canonical spelling
    model_path: str
    set_path: str
    status: str  # "decoded" this run, or "cached"
    rates: ErrorRates
    wer_interval: Interval  # percent
    decode_seconds: float
    audio_seconds: float
    rtf: float
    utts_per_second: float
    peak_rss_mb: float | None
    rss_increase_mb: float | None
    peak_gpu_mb: float | None
    memory_note: str
    num_params: int
    device: str
    threads: int
    normalizer: str
    skipped: list[str]
    utterances: list[UtteranceScore]
    analysis: ErrorAnalysis

    @property
    def ser(self) -> float:
        return 100.0 * self.rates.sentence_errors / max(self.rates.sentences, 1)


def aligned_pair(ref: list[str], hyp: list[str], chunks: Sequence) -> tuple[str, str]:
    """jiwer alignment chunks -> two column-aligned lines; words in error upper-cased, gaps shown as ***."""
    cols: list[tuple[str, str]] = []
    for c in chunks:
        r, h = ref[c.ref_start_idx : c.ref_end_idx], hyp[c.hyp_start_idx : c.hyp_end_idx]
        if c.type == "equal":
            cols += list(zip(r, h))
        elif c.type == "substitute":
            cols += [(a.upper(), b.upper()) for a, b in zip(r, h)]
        elif c.type == "delete":
            cols += [(a.upper(), "*" * len(a)) for a in r]
        else:  # insert
            cols += [("*" * len(b), b.upper()) for b in h]
    widths = [max(len(a), len(b)) for a, b in cols]
    return (
        " ".join(a.ljust(n) for (a, _), n in zip(cols, widths)).rstrip(),
        " ".join(b.ljust(n) for (_, b), n in zip(cols, widths)).rstrip(),
    )


def _alignments(refs: list[str], hyps: list[str]) -> list[list]:
    """Per-utterance jiwer alignment chunks; an empty reference aligns as all insertions (as asr.metrics counts)."""
    out: list[list] = [[] for _ in refs]
    scored = [i for i, r in enumerate(refs) if r]
    if scored:
        processed = jiwer.process_words([refs[i] for i in scored], [hyps[i] for i in scored])
        for i, chunks in zip(scored, processed.alignments):
            out[i] = chunks
    for i, r in enumerate(refs):
        if not r and hyps[i]:
            out[i] = [jiwer.AlignmentChunk("insert", 0, 0, 0, len(hyps[i].split()))]
    return out


def _chunk_errors(chunks: Sequence) -> int:
    n = 0
    for c in chunks:
        if c.type in ("substitute", "delete"):
            n += c.ref_end_idx - c.ref_start_idx
        elif c.type == "insert":
            n += c.hyp_end_idx - c.hyp_start_idx
    return n


def score_system(
    utts: list[Utterance],
    hyps: list[str | None],
    normalizer: str = "default",
    hyp_scores: Sequence[float | None] | None = None,
) -> tuple[ErrorRates, list[UtteranceScore], ErrorAnalysis]:
    """Corpus rates (asr.metrics), per-utterance error counts and error analysis, after the model's normaliser on
    references and hypotheses alike. hyps[i] None: unreadable audio, left out. `hyp_scores` are kept per utterance."""
    kept = [i for i, h in enumerate(hyps) if h is not None]
    if not kept:
        raise ValueError("no readable utterances to score")
    norm = get_normalizer(normalizer)
    refs = [norm(utts[i].text) for i in kept]
    outs = [norm(hyps[i]) for i in kept]
    rates = error_rates(refs, outs, normalize=False)
    errs = WordErrors()
    scores, aligned = [], []
    for i, ref, hyp, chunks in zip(kept, refs, outs, _alignments(refs, outs)):
        r, h = ref.split(), hyp.split()
        errs.add(r, h, chunks)
        logp = hyp_scores[i] if hyp_scores is not None else None
        scores.append(UtteranceScore(i, utts[i].id, ref, hyp, _chunk_errors(chunks), len(r), logp))
        aligned.append((r, h, chunks))

    def badness(k: int) -> tuple:  # most errors first; ties: the higher error rate, then manifest order
        return -scores[k].errors, -scores[k].errors / max(scores[k].ref_words, 1), k

    ranked = sorted(range(len(scores)), key=badness)
    worst = []
    for k in ranked[:WORST_K]:
        s = scores[k]
        if s.errors == 0:
            break
        a_ref, a_hyp = aligned_pair(*aligned[k])
        worst.append(WorstUtterance(s.id, s.errors, s.ref_words, s.ref, s.hyp, a_ref, a_hyp))
    analysis = ErrorAnalysis(
        [(r, h, n) for (r, h), n in errs.substitutions.most_common(TOP_K)],
        errs.deletions.most_common(TOP_K),
        errs.insertions.most_common(TOP_K),
        worst,
    )
    return rates, scores, analysis


# --- comparisons and breakdowns -------------------------------------------------------------------------------------


@dataclass
class Comparison:
    set: str
    varied: str  # "model" or "decoder": what differs between A and B
    fixed: str  # the decoder (when models are compared) or the model (when decoders are compared)
    a: str
    b: str
    result: PairedComparison


@dataclass
class GroupRow:
    group: str
    utterances: int
    ref_words: int
    wer: dict[str, float]  # system label "model · decoder" -> WER % in this group


@dataclass
class Breakdown:
    field: str
    set: str
    systems: list[str]  # column order
    rows: list[GroupRow]
    sorted_by: str  # the system whose worst groups come first ("" for duration buckets, kept in length order)


@dataclass
class BenchmarkReport:
    systems: list[SystemResult]
    comparisons: list[Comparison]
    breakdowns: list[Breakdown]
    n_bootstrap: int
    seed: int
    device: str
    models: list[str]
    sets: list[str]
    decoders: list[str]


def system_label(s: SystemResult) -> str:
    return f"{s.model} · {s.decoder}"


def compare(a: SystemResult, b: SystemResult, n_resamples: int, seed: int) -> PairedComparison:
    """Paired bootstrap over the utterances both systems scored (the same set, so normally all of them)."""
    ea = {u.index: u for u in a.utterances}
    common = [u for u in b.utterances if u.index in ea]
    return paired_bootstrap(
        [ea[u.index].errors for u in common],
        [u.errors for u in common],
        [u.ref_words for u in common],
        n_resamples,
        seed,
    )


def comparisons(systems: list[SystemResult], n_resamples: int, seed: int) -> list[Comparison]:
    """First model against each other model (same set and decoder); first decoder against each other decoder (same
    set and model). All pairs would be n^2 lines that nobody reads."""
    by_key = {(s.set, s.model, s.decoder): s for s in systems}
    models = list(dict.fromkeys(s.model for s in systems))
    decoders = list(dict.fromkeys(s.decoder for s in systems))
    sets = list(dict.fromkeys(s.set for s in systems))
    out = []
    for set_ in sets:
        for dec in decoders:
            for other in models[1:]:
                a, b = by_key.get((set_, models[0], dec)), by_key.get((set_, other, dec))
                if a and b:
                    out.append(Comparison(set_, "model", dec, a.model, b.model, compare(a, b, n_resamples, seed)))
        for model in models:
            for other in decoders[1:]:
                a, b = by_key.get((set_, model, decoders[0])), by_key.get((set_, model, other))
                if a and b:
                    result = compare(a, b, n_resamples, seed)
                    out.append(Comparison(set_, "decoder", model, a.decoder, b.decoder, result))
    return out


def duration_bucket(seconds: float) -> str:
    for limit, name in DURATION_BUCKETS:
        if seconds < limit:
            return name
    return DURATION_BUCKETS[-1][1]


def group_of(u: Utterance, field_name: str) -> str:
    if field_name == "duration":
        return duration_bucket(u.duration)
    value = u.extra.get(field_name)
    return "(none)" if value is None else str(value)


def breakdown(field_name: str, set_label: str, utts: list[Utterance], systems: list[SystemResult]) -> Breakdown:
    """WER per group of utterances, one column per system. Groups are sorted worst first for the best system on the
    set (its failures are the ones worth a look; a weak system fails everywhere); duration buckets stay in order."""
    group = [group_of(u, field_name) for u in utts]
    labels = [system_label(s) for s in systems]
    names = list(dict.fromkeys(group))
    counts = {label: {g: [0, 0] for g in names} for label in labels}  # system -> group -> [errors, ref words]
    sizes = {g: [0, 0] for g in names}  # group -> [utterances, ref words], as the first system scored them
    for label, s in zip(labels, systems):
        for u in s.utterances:
            c = counts[label][group[u.index]]
            c[0] += u.errors
            c[1] += u.ref_words
            if s is systems[0]:
                sizes[group[u.index]][0] += 1
                sizes[group[u.index]][1] += u.ref_words
    rows = [
        GroupRow(g, sizes[g][0], sizes[g][1], {k: 100.0 * counts[k][g][0] / max(counts[k][g][1], 1) for k in labels})
        for g in names
    ]
    if field_name == "duration":
        order = [name for _, name in DURATION_BUCKETS]
        rows.sort(key=lambda r: order.index(r.group))
        return Breakdown(field_name, set_label, labels, rows, "")
    best = labels[min(range(len(systems)), key=lambda k: systems[k].rates.wer)] if systems else ""
    rows.sort(key=lambda r: (-r.wer.get(best, 0.0), r.group))
    return Breakdown(field_name, set_label, labels, rows, best)


def short_labels(paths: Sequence[Path]) -> list[str]:
    """The fewest trailing path parts that tell the paths apart: exp/a/model.pt, exp/b/model.pt -> a/model.pt, ..."""
    parts = [Path(p).resolve().parts for p in paths]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(set(map(tuple, parts))):
            return labels
    return [str(p) for p in paths]
