"""Running a benchmark: every model x test set x decoder, decoded, timed and cached; `asr evaluate` is one system.

    run_benchmark(BenchmarkSpec(models, sets, decoders, out_dir, ...)) -> BenchmarkReport
    evaluate(recognizer, manifest, options) -> SystemResult           one model, one set, one decoder (asr evaluate)

Both go through the same three steps: `load_utterances` (reads each utterance's audio; a bad file is named and left
out of the score, never a crash), `decode_set` (`Recognizer.transcribe` with each utterance decoded whole, timed:
real-time factor, peak memory) and `asr.benchmark.analysis.score_system` (WER/CER, S/D/I, error analysis).

Per system: WER/CER, a bootstrap 95% interval of the WER (utterances resampled), S/D/I, sentence error rate,
real-time factor and utterances per second (decoding only: audio is loaded before the clock starts), peak resident
memory while decoding, parameter count. Hypotheses and timings are cached under the cache folder, keyed by the model
file's sha256, the manifest's sha256, the decoder's canonical spelling, the device and the batch size: a rerun
decodes only what it has not seen.

A model is a model file (torch) or an export folder (asr export: ONNX Runtime on the CPU, keyed by its model.json,
which holds every graph's sha256), so one table compares torch fp32, ONNX fp32 and ONNX int8 on the same sets.
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
from typing import Any, Sequence

from asr.benchmark.analysis import (
    BenchmarkReport,
    SystemResult,
    breakdown,
    comparisons,
    score_system,
    short_labels,
)
from asr.data.manifest import Utterance, read_manifest
from asr.decoding.options import DecoderSetup, DecodingOptions
from asr.outputs import sha256_file, write_text
from asr.stats import Interval, bootstrap_interval

log = logging.getLogger("asr")

CACHE_VERSION = 2  # 2: scores cached with the hypotheses


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
    lm: Path | None = None  # token LM (asr train-lm): used by the setups that set lm_weight


# --- loading, decoding with timing and memory, the cache ------------------------------------------------------------


@dataclass
class Decoded:
    """What one model x set x decoder decode produced: what the cache stores."""

    hyps: list[str | None]  # one per manifest line; None = unreadable audio, left out of the score
    scores: list[float | None]  # each hypothesis's log-probability under the decoder's scoring
    decode_seconds: float  # the decoding calls only (features, encoder, search, detokenising)
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


def load_utterances(utts: list[Utterance], sample_rate: int) -> tuple[list, list[str]]:
    """Each utterance's waveform (its offset/duration span), or None where the audio is unreadable; and the
    reasons, each naming the file (also logged)."""
    from asr.audio import AudioError
    from asr.data.dataset import load_utterance

    wavs, skipped = [], []
    for u in utts:
        try:
            wavs.append(load_utterance(u, sample_rate))
        except AudioError as e:  # left out of the score and reported, with the manifest line that names the file
            reason = f"{u.source}: {e}" if u.source else str(e)
            log.warning("skipping %s", reason)
            wavs.append(None)
            skipped.append(reason)
    return wavs, skipped


def is_export_folder(model: str | Path) -> bool:
    return Path(model).is_dir()


def model_sha256(model: str | Path) -> str:
    """A model file's sha256; an export folder's model.json's (it records the sha256 of every graph, and the runtime
    refuses graphs that differ)."""
    return sha256_file(Path(model) / "model.json" if is_export_folder(model) else Path(model))


@dataclass
class SystemFacts:
    """What a report says about the recognizer itself: torch's Recognizer or the ONNX Runtime."""

    device: str
    num_params: int
    threads: int
    normalizer: str


def system_facts(recognizer) -> SystemFacts:
    from asr.runtime import Runtime

    if isinstance(recognizer, Runtime):
        card = recognizer.card
        return SystemFacts(
            "cpu (onnxruntime)", int(card["parameters"]), recognizer.threads, card["tokenizer"]["normalizer"]
        )
    import torch

    return SystemFacts(
        str(recognizer.device),
        sum(p.numel() for p in recognizer.parameters()),
        torch.get_num_threads(),
        getattr(getattr(recognizer.tokenizer, "normalizer", None), "name", "default"),
    )


def decode_set(recognizer, options: DecodingOptions, wavs: list, batch_size: int) -> Decoded:
    """Decode the loaded waveforms (None = skip), each whole, timing only the decoding."""
    import torch

    facts = system_facts(recognizer)
    device = getattr(recognizer, "device", None)
    cuda = isinstance(device, torch.device) and device.type == "cuda"
    kept = [i for i, w in enumerate(wavs) if w is not None]
    sr = recognizer.cfg.features.sample_rate

    def run(idx: list[int]) -> list:
        return recognizer.transcribe(
            [wavs[i] for i in idx],
            options,
            sample_rate=sr,
            batch_size=batch_size,
            cut_at_pauses=False,
            align_times=False,
        )

    if kept:  # warm-up, untimed: the first call pays one-off costs (allocator growth, kernel selection, caches)
        run(sorted(kept, key=lambda i: wavs[i].numel())[: min(batch_size, 4)])
    gc.collect()  # garbage from the previous system should not count as this one's memory
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    memory = PeakMemory()
    t0 = time.perf_counter()
    found = run(kept)
    if cuda:
        torch.cuda.synchronize(device)  # kernels run asynchronously: wait for them before reading the clock
    seconds = time.perf_counter() - t0
    peak = memory.peak_mb()
    hyps: list[str | None] = [None] * len(wavs)
    scores: list[float | None] = [None] * len(wavs)
    for i, t in zip(kept, found):
        hyps[i] = t.text
        scores[i] = sum(s.score for s in t.segments) if t.segments else None
    return Decoded(
        hyps=hyps,
        scores=scores,
        decode_seconds=seconds,
        audio_seconds=sum(wavs[i].numel() for i in kept) / sr,
        peak_rss_mb=peak,
        rss_increase_mb=None if peak is None or memory.before_mb is None else max(peak - memory.before_mb, 0.0),
        peak_gpu_mb=torch.cuda.max_memory_allocated(device) / (1 << 20) if cuda else None,
        memory_note=memory.note,
        num_params=facts.num_params,
        device=facts.device,
        batch_size=batch_size,
        threads=facts.threads,
        normalizer=facts.normalizer,
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
    blob = {"version": CACHE_VERSION, "key": asdict(key), "decoded": asdict(decoded)}
    # Atomic: an interrupted run leaves no half-written entry. The cache is the toolkit's own folder, so an entry
    # is replaced whoever wrote it (a stale one has been ignored by load_cached already).
    return write_text(key.path(cache_dir), json.dumps(blob, ensure_ascii=False), overwrite=True)


# --- one system: asr evaluate -------------------------------------------------------------------------------------


def evaluate(
    recognizer,
    manifest: str | Path,
    options: DecodingOptions | None = None,
    *,
    batch_size: int | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    **given: Any,
) -> SystemResult:
    """Decode a manifest with one model and one decoder (`options` and/or keywords such as beam_size=10) and score
    it: a one-system benchmark, with no cache."""
    options = recognizer.options(options, **given)
    utts = read_manifest(manifest)  # ManifestError names file:line
    if not utts:
        raise ValueError(f"{manifest}: manifest has no utterances")
    wavs, skipped = load_utterances(utts, recognizer.cfg.features.sample_rate)
    if not any(w is not None for w in wavs):
        raise ValueError(f"{manifest}: no readable utterances")
    decoded = decode_set(recognizer, options, wavs, batch_size or recognizer.cfg.decode.batch_size)
    decoded.skipped = skipped
    label = Path(manifest).name
    return _result("model", "model", manifest, label, options.describe(), "decoded", decoded, utts, n_bootstrap, seed)


# --- the run ---------------------------------------------------------------------------------------------------------


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
        if is_export_folder(m):
            if spec.device != "cpu":
                raise ValueError(f"{m}: an export folder runs on ONNX Runtime's CPU provider (--device cpu)")
        elif not Path(m).is_file():
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


def _uses_lm(setup: DecoderSetup) -> bool:
    """In a benchmark the LM is used by exactly the setups that set lm_weight > 0."""
    return dict(setup.params).get("lm_weight", 0) > 0


def _load(model_path: Path, spec: BenchmarkSpec):
    """The model (with the LM attached), and each setup's options: a setup this model can't run fails here, before
    any decoding."""
    from asr.lm import load_lm
    from asr.recognizer import load_model
    from asr.runtime import Runtime

    if is_export_folder(model_path):
        rec = Runtime(model_path, threads=spec.threads or 0)
    else:
        rec = load_model(model_path, device=spec.device)
    if spec.lm is not None and not is_export_folder(model_path):
        try:
            rec.attach_lm(load_lm(spec.lm, device=rec.device))
        except ValueError as e:
            raise ValueError(f"--lm {spec.lm} with model {model_path}: {e}") from None
    options = {}
    for setup in spec.decoders:
        lm_off = {"lm_weight": 0.0} if setup.kind == "beam" and not _uses_lm(setup) else {}
        try:
            options[setup.canonical] = rec.options(decoder=setup, **lm_off)
        except ValueError as e:
            hint = (
                " (asr benchmark --lm FILE)" if "language model" in str(e) and not is_export_folder(model_path) else ""
            )
            raise ValueError(f"decoder {setup.canonical} on {model_path}: {e}{hint}") from None
    return rec, options


def _systems(
    spec: BenchmarkSpec, manifests: dict[Path, list[Utterance]], model_labels: list[str], set_labels: list[str]
) -> list[SystemResult]:
    """Each model x set x decoder from the cache, or decoded (model and audio loaded only when needed) and cached."""
    cache_dir = Path(spec.cache_dir) if spec.cache_dir else Path(spec.out_dir) / "cache"
    set_hashes = {Path(s): sha256_file(Path(s)) for s in spec.sets}
    lm_hash = sha256_file(Path(spec.lm)) if spec.lm is not None else None
    systems: list[SystemResult] = []
    for model_path, model_label in zip(spec.models, model_labels):
        model_hash = model_sha256(model_path)
        folder = is_export_folder(model_path)  # it carries its own LM (asr export --lm), in its hash
        rec, options = None, {}  # loaded only if something is not cached
        audio: dict[Path, tuple[list, list[str]]] = {}
        for set_path, set_label in zip(map(Path, spec.sets), set_labels):
            utts = manifests[set_path]
            for setup in spec.decoders:
                key = CacheKey(
                    model_hash,
                    set_hashes[set_path],
                    setup.canonical,
                    spec.device,
                    spec.batch_size,
                    spec.threads,
                    lm_hash if _uses_lm(setup) and not folder else None,
                )
                decoded = load_cached(cache_dir, key, len(utts))
                status = "cached"
                if decoded is None:
                    if rec is None:
                        rec, options = _load(Path(model_path), spec)
                    if set_path not in audio:
                        audio[set_path] = load_utterances(utts, rec.cfg.features.sample_rate)
                    wavs, skipped = audio[set_path]
                    log.info("decoding %s on %s with %s", model_label, set_label, setup.canonical)
                    batch = spec.batch_size or rec.cfg.decode.batch_size
                    decoded = decode_set(rec, options[setup.canonical], wavs, batch)
                    decoded.skipped = skipped
                    save_cached(cache_dir, key, decoded)
                    status = "decoded"
                labels = (model_path, model_label, set_path, set_label, setup.canonical, status)
                systems.append(_result(*labels, decoded, utts, spec.n_bootstrap, spec.seed))
        del rec, audio
        gc.collect()  # the next model's memory figures should not include this one
    return systems


def _result(
    model_path, model_label, set_path, set_label, decoder: str, status: str, d: Decoded, utts, n_bootstrap, seed
) -> SystemResult:
    rates, scores, analysis = score_system(utts, d.hyps, d.normalizer, d.scores)
    ci = bootstrap_interval([u.errors for u in scores], [u.ref_words for u in scores], n_bootstrap, seed)
    return SystemResult(
        model=model_label,
        set=set_label,
        decoder=decoder,
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
