"""Evaluation: decode a manifest with a trained model and score it.

    evaluate(recognizer, manifest, beam_size) -> EvalResult(rates: ErrorRates, rows: per-utterance dicts, rtf)

References and hypotheses are scored after the model's own text normaliser (the one its training transcripts got).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from asr.audio import AudioError
from asr.data.dataset import load_utterance
from asr.data.manifest import read_manifest
from asr.metrics import ErrorRates, error_rates
from asr.recognizer import Recognizer
from asr.text import Normalizer, get_normalizer

log = logging.getLogger("asr")


@dataclass
class EvalResult:
    rates: ErrorRates
    rows: list[dict]  # audio_filepath, ref, hyp (normalised), errors
    audio_seconds: float
    decode_seconds: float
    skipped: list[str]
    normalizer: Normalizer = field(default_factory=get_normalizer)  # applied to refs and hyps before scoring

    @property
    def rtf(self) -> float:
        return self.decode_seconds / max(self.audio_seconds, 1e-9)


def evaluate(
    recognizer: Recognizer,
    manifest: str | Path,
    beam_size: int | None = None,
    batch_size: int | None = None,
    ctc_weight: float | None = None,
) -> EvalResult:
    utts = read_manifest(manifest)
    sr = recognizer.cfg.features.sample_rate
    wavs, kept, skipped = [], [], []
    for u in utts:
        try:
            wavs.append(load_utterance(u, sr))
            kept.append(u)
        except AudioError as e:  # reported and left out of the score, never a crash mid-run
            log.warning("skipping %s", e)
            skipped.append(str(e))
    if not kept:
        raise ValueError(f"{manifest}: no readable utterances")
    start = time.perf_counter()
    hyps = recognizer.recognize_waveforms(wavs, beam_size=beam_size, batch_size=batch_size, ctc_weight=ctc_weight)
    decode_s = time.perf_counter() - start
    refs = [u.text for u in kept]
    norm = recognizer.tokenizer.normalizer  # the one its training transcripts got
    rates = error_rates(refs, hyps, normalizer=norm)
    rows = []
    for u, ref, hyp in zip(kept, refs, hyps):
        r = error_rates([ref], [hyp], normalizer=norm)
        rows.append(
            {
                "audio_filepath": u.audio_filepath,
                "ref": norm(ref),
                "hyp": norm(hyp),
                "word_errors": r.substitutions + r.deletions + r.insertions,
                "ref_words": r.ref_words,
                **{k: v for k, v in u.extra.items() if k in ("speaker", "id")},
            }
        )
    audio_s = sum(w.numel() for w in wavs) / sr
    return EvalResult(rates, rows, audio_s, decode_s, skipped, norm)


def write_hypotheses(path: str | Path, result: EvalResult) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in result.rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
