"""Benchmark: every model x test set x decoding setup, scored like a scientist would want it.

    run_benchmark(BenchmarkSpec(models, sets, decoders, out_dir, ...)) -> BenchmarkReport
    asr.benchmark_report.write_report(report, out_dir) -> the .md/.csv/.json/.png files

Per system: WER/CER, a bootstrap 95% interval of the WER (utterances resampled), S/D/I, sentence error rate,
real-time factor and utterances per second (decoding only: audio is loaded before the clock starts), peak resident
memory while decoding, parameter count. Across systems: paired bootstrap tests (the first model against each other
model, the first decoder against each other decoder), breakdowns by manifest field or duration bucket, and error
analysis (frequent substitutions/deletions/insertions, the worst utterances aligned).

Hypotheses and timings are cached under the cache folder, keyed by the model file's sha256, the manifest's sha256,
the decoder's canonical spelling, the device and the batch size: a rerun decodes only what it has not seen.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import jiwer

from asr.data.manifest import Utterance, read_manifest
from asr.decoding.setups import DecoderSetup
from asr.metrics import ErrorRates, WordErrors, error_rates
from asr.stats import Interval, PairedComparison, bootstrap_interval, paired_bootstrap
from asr.text import get_normalizer

log = logging.getLogger("asr")

CACHE_VERSION = 1
DURATION_BUCKETS = ((2.0, "<2 s"), (5.0, "2-5 s"), (10.0, "5-10 s"), (float("inf"), ">10 s"))
TOP_K = 10  # substitutions/deletions/insertions listed per system
WORST_K = 5  # worst utterances listed per system


@dataclass
class BenchmarkSpec:
    models: list[Path]
    sets: list[Path]
    decoders: list[DecoderSetup]
    out_dir: Path
    by: list[str] = field(default_factory=list)  # manifest fields, or "duration"
    n_bootstrap: int = 1000
    seed: int = 0
    device: str = "cpu"
    batch_size: int | None = None  # default: each model's decode.batch_size
    cache_dir: Path | None = None  # default: out_dir / "cache"
    threads: int | None = None  # torch CPU threads while decoding; None = torch's default (recorded either way)
    lm: Path | None = None  # token LM (asr train-lm), attached with weight 0: setups opt in with lm_weight


# --- decoding, with timing, memory and the cache --------------------------------------------------------------------


@dataclass
class Decoded:
    """What one model x set x decoder decode produced: what the cache stores."""

    hyps: list[str | None]  # one per manifest line; None = unreadable audio, left out of the score
    decode_seconds: float  # the decoding calls only (batch to device, features, encoder, search, detokenising)
    audio_seconds: float  # of the decoded utterances
    peak_rss_mb: float | None  # process peak resident memory while decoding (see PeakMemory)
    rss_increase_mb: float | None  # that peak minus the resident memory just before decoding
    peak_gpu_mb: float | None  # torch.cuda.max_memory_allocated while decoding (cuda only)
    memory_note: str  # how the peak was measured
    num_params: int
    device: str
    batch_size: int
    threads: int  # torch CPU threads
    normalizer: str = "default"  # the model's text normaliser (asr.text.NORMALIZERS): scoring applies it to both sides
    skipped: list[str] = field(default_factory=list)


class PeakMemory:
    """Peak resident set size of this process over a stretch of code.

    Linux keeps a resettable high-water mark (VmHWM; writing 5 to /proc/self/clear_refs resets it), which gives the
    peak of each decode on its own even though all run in one process. Elsewhere only the lifetime peak
    (getrusage ru_maxrss) exists, so a later, smaller decode reports an earlier, bigger one's peak: said in the note.
    """

    def __init__(self) -> None:
        self.before_mb = _status_mb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.resettable = _status_mb("VmHWM") is not None
        except OSError:
            self.resettable = False

    def peak_mb(self) -> float | None:
        if self.resettable:
            return _status_mb("VmHWM")
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / (1 << 20) if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux

    @property
    def note(self) -> str:
        if self.resettable:
            return "the process's peak resident memory during that decode (Linux VmHWM, reset before each decode)"
        return "the process's lifetime peak resident memory (getrusage; this OS can't reset it per decode)"


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_audio(utts: list[Utterance], sample_rate: int) -> tuple[list, list[str]]:
    from asr.audio import AudioError
    from asr.data.dataset import load_utterance

    wavs, skipped = [], []
    for u in utts:
        try:
            wavs.append(load_utterance(u, sample_rate))
        except AudioError as e:  # left out of the score and reported, as `asr evaluate` does
            log.warning("skipping %s", e)
            wavs.append(None)
            skipped.append(str(e))
    return wavs, skipped


def decode_set(recognizer, setup: DecoderSetup, wavs: list, batch_size: int) -> Decoded:
    """Decode the loaded waveforms (None = skip) in length-sorted batches, timing only the decoding calls."""
    import torch

    from asr.recognizer import pad_waveforms

    device = recognizer.device
    cuda = device.type == "cuda"
    order = sorted((i for i, w in enumerate(wavs) if w is not None), key=lambda i: wavs[i].numel())
    hyps: list[str | None] = [None] * len(wavs)
    if order:  # warm-up, untimed: the first call pays one-off costs (allocator growth, kernel selection, caches)
        padded, lengths = pad_waveforms([wavs[i] for i in order[: min(batch_size, 4)]])
        setup.run(recognizer, padded.to(device), lengths.to(device))
    gc.collect()  # garbage from the previous system should not count as this one's memory
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    memory = PeakMemory()
    seconds = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        padded, lengths = pad_waveforms([wavs[i] for i in idx])
        t0 = time.perf_counter()
        texts = setup.run(recognizer, padded.to(device), lengths.to(device))
        if cuda:
            torch.cuda.synchronize(device)  # kernels run asynchronously: wait for them before reading the clock
        seconds += time.perf_counter() - t0
        for i, text in zip(idx, texts):
            hyps[i] = text
    peak = memory.peak_mb()
    sr = recognizer.cfg.features.sample_rate
    return Decoded(
        hyps=hyps,
        decode_seconds=seconds,
        audio_seconds=sum(wavs[i].numel() for i in order) / sr,
        peak_rss_mb=peak,
        rss_increase_mb=None if peak is None or memory.before_mb is None else max(peak - memory.before_mb, 0.0),
        peak_gpu_mb=torch.cuda.max_memory_allocated(device) / (1 << 20) if cuda else None,
        memory_note=memory.note,
        num_params=sum(p.numel() for p in recognizer.parameters()),
        device=str(device),
        batch_size=batch_size,
        threads=torch.get_num_threads(),
        normalizer=getattr(getattr(recognizer.tokenizer, "normalizer", None), "name", "default"),
    )


@dataclass(frozen=True)
class CacheKey:
    model_sha256: str
    set_sha256: str
    decoder: str  # canonical spelling
    device: str
    batch_size: int | None  # None: the model's own default (resolved when decoding)
    threads: int | None  # timings depend on it as much as on the device
    lm_sha256: str | None = None  # only for setups that use the LM, so adding --lm keeps the other entries valid

    def path(self, cache_dir: Path) -> Path:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]
        return cache_dir / f"{digest}.json"


def load_cached(cache_dir: Path, key: CacheKey, n_utts: int) -> Decoded | None:
    path = key.path(cache_dir)
    if not path.is_file():
        return None
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
        if blob.get("version") != CACHE_VERSION or blob.get("key") != asdict(key):
            return None
        decoded = Decoded(**blob["decoded"])
    except (ValueError, TypeError, KeyError) as e:  # a damaged entry is decoded again, never trusted
        log.warning("ignoring cache entry %s (%s)", path, e)
        return None
    return decoded if len(decoded.hyps) == n_utts else None


def save_cached(cache_dir: Path, key: CacheKey, decoded: Decoded) -> Path:
    path = key.path(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    blob = {"version": CACHE_VERSION, "key": asdict(key), "decoded": asdict(decoded)}
    tmp.write_text(json.dumps(blob, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)  # atomic: an interrupted run leaves no half-written entry
    return path


# --- scoring ---------------------------------------------------------------------------------------------------------


@dataclass
class UtteranceScore:
    index: int  # line in the manifest (0-based, blank lines not counted)
    id: str
    ref: str  # normalised
    hyp: str  # normalised
    errors: int
    ref_words: int


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
    utts: list[Utterance], hyps: list[str | None], normalizer: str = "default"
) -> tuple[ErrorRates, list[UtteranceScore], ErrorAnalysis]:
    """Corpus rates (asr.metrics, as `asr evaluate` reports them), per-utterance error counts and error analysis,
    after the model's normaliser on references and hypotheses alike."""
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
        scores.append(UtteranceScore(i, utts[i].id, ref, hyp, _chunk_errors(chunks), len(r)))
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


# --- the run ---------------------------------------------------------------------------------------------------------


def short_labels(paths: Sequence[Path]) -> list[str]:
    """The fewest trailing path parts that tell the paths apart: exp/a/model.pt, exp/b/model.pt -> a/model.pt, ..."""
    parts = [Path(p).resolve().parts for p in paths]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(set(map(tuple, parts))):
            return labels
    return [str(p) for p in paths]


def _check_inputs(spec: BenchmarkSpec) -> dict[Path, list[Utterance]]:
    """Everything that can be wrong with the inputs, found before anything is decoded."""
    if spec.n_bootstrap < 1:
        raise ValueError(f"--bootstrap must be at least 1, got {spec.n_bootstrap}")
    if spec.threads is not None and spec.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {spec.threads}")
    if spec.batch_size is not None and spec.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {spec.batch_size}")
    if not spec.models or not spec.sets or not spec.decoders:
        raise ValueError("benchmark needs at least one model, one set and one decoder")
    for m in spec.models:
        if not Path(m).is_file():
            raise FileNotFoundError(f"{m}: model file not found")
    if spec.lm is not None and not Path(spec.lm).is_file():
        raise FileNotFoundError(f"{spec.lm}: LM file not found")
    manifests = {}
    for s in spec.sets:
        utts = read_manifest(s)  # ManifestError names file:line
        if not utts:
            raise ValueError(f"{s}: manifest has no utterances")
        manifests[Path(s)] = utts
        for f in spec.by:
            if f != "duration" and not any(f in u.extra for u in utts):
                raise ValueError(f"--by {f}: no utterance in {s} has a {f!r} field")
    return manifests


def _attach_lm(rec, lm_path: Path, model_path: Path) -> None:
    from asr.lm import load_lm

    try:  # weight 0: greedy stays greedy and beams stay LM-free unless a setup sets lm_weight
        rec.attach_lm(load_lm(lm_path, device=rec.device), 0.0)
    except ValueError as e:
        raise ValueError(f"--lm {lm_path} with model {model_path}: {e}") from None


def _unique(paths: Sequence[Path]) -> list[Path]:
    """The same file named twice would be two systems with one label: keep the first mention."""
    seen: dict[Path, Path] = {}
    for p in paths:
        seen.setdefault(Path(p).resolve(), Path(p))
    return list(seen.values())


def run_benchmark(spec: BenchmarkSpec) -> BenchmarkReport:
    """Check every input, decode what the cache lacks, score, compare and break down. Errors in the inputs (missing
    model, bad manifest line, unknown decoder or --by field) are raised before anything is decoded."""
    import torch

    spec = replace(spec, models=_unique(spec.models), sets=_unique(spec.sets))
    manifests = _check_inputs(spec)
    model_labels, set_labels = short_labels(spec.models), short_labels(spec.sets)
    threads = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    try:
        systems = _systems(spec, manifests, model_labels, set_labels)
    finally:
        torch.set_num_threads(threads)  # a library call should not change the caller's torch settings
    comps = comparisons(systems, spec.n_bootstrap, spec.seed)
    breakdowns = [
        breakdown(f, set_label, manifests[Path(s)], [x for x in systems if x.set == set_label])
        for f in spec.by
        for s, set_label in zip(spec.sets, set_labels)
    ]
    return BenchmarkReport(
        systems,
        comps,
        breakdowns,
        spec.n_bootstrap,
        spec.seed,
        spec.device,
        model_labels,
        set_labels,
        [d.canonical for d in spec.decoders],
    )


def _systems(
    spec: BenchmarkSpec, manifests: dict[Path, list[Utterance]], model_labels: list[str], set_labels: list[str]
) -> list[SystemResult]:
    """Each model x set x decoder from the cache, or decoded (model and audio loaded only when needed) and cached."""
    from asr.recognizer import load_model

    cache_dir = Path(spec.cache_dir) if spec.cache_dir else Path(spec.out_dir) / "cache"
    set_hashes = {Path(s): sha256_file(Path(s)) for s in spec.sets}
    lm_hash = sha256_file(Path(spec.lm)) if spec.lm is not None else None
    systems: list[SystemResult] = []
    for model_path, model_label in zip(spec.models, model_labels):
        model_hash = sha256_file(Path(model_path))
        rec = None  # loaded only if something is not cached
        audio: dict[Path, tuple[list, list[str]]] = {}
        for set_path, set_label in zip(map(Path, spec.sets), set_labels):
            utts = manifests[set_path]
            for setup in spec.decoders:
                uses_lm = setup.all_params().get("lm_weight", 0) > 0
                key = CacheKey(
                    model_hash,
                    set_hashes[set_path],
                    setup.canonical,
                    spec.device,
                    spec.batch_size,
                    spec.threads,
                    lm_hash if uses_lm else None,
                )
                decoded = load_cached(cache_dir, key, len(utts))
                status = "cached"
                if decoded is None:
                    if rec is None:
                        rec = load_model(model_path, device=spec.device)
                        if spec.lm is not None:
                            _attach_lm(rec, Path(spec.lm), model_path)
                        for s in spec.decoders:  # a decoder this model can't run fails before any decoding
                            s.check(rec)
                    if set_path not in audio:
                        audio[set_path] = _load_audio(utts, rec.cfg.features.sample_rate)
                    wavs, skipped = audio[set_path]
                    log.info("decoding %s on %s with %s", model_label, set_label, setup.canonical)
                    decoded = decode_set(rec, setup, wavs, spec.batch_size or rec.cfg.decode.batch_size)
                    decoded.skipped = skipped
                    save_cached(cache_dir, key, decoded)
                    status = "decoded"
                labels = (model_path, model_label, set_path, set_label)
                systems.append(_result(*labels, setup, status, decoded, utts, spec))
        del rec, audio
        gc.collect()  # the next model's memory figures should not include this one
    return systems


def _result(model_path, model_label, set_path, set_label, setup, status, d: Decoded, utts, spec) -> SystemResult:
    rates, scores, analysis = score_system(utts, d.hyps, d.normalizer)
    ci = bootstrap_interval([u.errors for u in scores], [u.ref_words for u in scores], spec.n_bootstrap, spec.seed)
    return SystemResult(
        model=model_label,
        set=set_label,
        decoder=setup.canonical,
        model_path=str(model_path),
        set_path=str(set_path),
        status=status,
        rates=rates,
        wer_interval=Interval(100 * ci.low, 100 * ci.high),
        decode_seconds=d.decode_seconds,
        audio_seconds=d.audio_seconds,
        rtf=d.decode_seconds / max(d.audio_seconds, 1e-9),
        utts_per_second=len(scores) / max(d.decode_seconds, 1e-9),
        peak_rss_mb=d.peak_rss_mb,
        rss_increase_mb=d.rss_increase_mb,
        peak_gpu_mb=d.peak_gpu_mb,
        memory_note=d.memory_note,
        num_params=d.num_params,
        device=d.device,
        threads=d.threads,
        normalizer=d.normalizer,
        skipped=d.skipped,
        utterances=scores,
        analysis=analysis,
    )
