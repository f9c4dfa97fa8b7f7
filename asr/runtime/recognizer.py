"""An export folder -> transcripts, without torch: what asr.recognizer.Recognizer.transcribe does, on ONNX Runtime.

    rt = Runtime("exp/an4/onnx")               model.json checked, graphs loaded (threads=0: all cores)
    rt.options(beam_size=10)                   -> DecodingOptions (asr.decoding.options: the same options, defaults
                                                  and checks as the torch path)
    rt.transcribe(["a.wav"], beam_size=10)     -> [Transcript] (asr.transcript: txt/json/srt/vtt via render)

Pipeline per batch: numpy features (asr.runtime.features) -> encoder graph (CMVN inside) -> the search asked for
(asr.runtime.search: greedy, beam with joint CTC, CTC best path; nat-length, nat-max and mask-ctc where the folder has
the NAT head) -> text (asr.runtime.tokens). Long recordings are cut at pauses (asr.segment, numpy only) into chunks
of at most max_chunk_seconds, decoded in batches of similar length, and stitched. Beam search fuses the folder's
token LM (exported with `asr export --lm`) when lm_weight > 0. Test-time VTLN (vtln_warps) encodes and searches a batch
once per warp and keeps each utterance's best hypothesis, as the torch path does.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from asr.decoding.options import DecodingOptions, OptionsError, check_heads, keyword, options_for_model
from asr.runtime.align import ctc_align
from asr.runtime.audio import load_audio, resample
from asr.runtime.features import compute_batch
from asr.runtime.model import ExportError, OnnxModel
from asr.runtime.search import beam_search, ctc_greedy, greedy_search, mask_ctc, nat_length, nat_max
from asr.runtime.tokens import Vocabulary
from asr.segment import MAX_CHUNK_SECONDS, Segment, split_on_pauses
from asr.transcript import TimedText, Transcript, Word

MIN_FEATURE_FRAMES = 7  # the conv front end needs this many frames for one encoder frame (asr.recognizer)
RUNTIME_DECODERS = ("greedy", "beam", "ctc", "nat-length", "nat-max", "mask-ctc")


def _namespace(d: Any) -> Any:
    """model.json's config dict -> nested attribute access (cfg.features.sample_rate), as the Config dataclasses give
    the torch Recognizer: asr.transcribe and DecodingOptions.from_config read it that way."""
    if isinstance(d, dict):
        return types.SimpleNamespace(**{k: _namespace(v) for k, v in d.items()})
    return d


class Runtime:
    """A transcriber over an export folder; the interface of asr.recognizer.Recognizer that asr transcribe uses."""

    def __init__(self, folder: str | Path, threads: int = 0):
        self.model = OnnxModel(folder, threads)
        self.threads = threads or os.cpu_count() or 1  # 0: ONNX Runtime's default, a thread per core
        self.card = self.model.card
        self.cfg = _namespace(self.card["config"])
        self.features_cfg = self.card["config"]["features"]
        self.sample_rate = int(self.features_cfg["sample_rate"])
        try:
            self.vocab = Vocabulary(self.card["tokenizer"])
        except (KeyError, TypeError, ValueError) as e:
            raise ExportError(f"{Path(folder) / 'model.json'}: damaged tokenizer ({e})") from None
        self.ids = self.card["special_ids"]
        self.has_ctc = bool(self.card["has_ctc"])
        self.has_nat = bool(self.card.get("has_nat"))
        self.lm = self.model.lm_steps()  # the folder's token LM (asr export --lm), or None; the options checks read it

    def options(self, options: DecodingOptions | None = None, spell=keyword, **given: Any) -> DecodingOptions:
        """The model's default options (model.json) with `given` applied and checked, as Recognizer.options."""
        no_lm = "" if self.lm is not None else "needs a language model: this export folder has none (asr export --lm)"
        opts = options_for_model(options, self.cfg.decode, given, spell, self.has_ctc, no_lm)
        self.check(opts)
        return opts

    def check(self, options: DecodingOptions) -> None:
        d = options.decoder
        if d not in RUNTIME_DECODERS:
            raise OptionsError(
                f"decoder {d}: not in the ONNX runtime (it has {', '.join(RUNTIME_DECODERS)}; use the torch model)"
            )
        check_heads(options, self.has_ctc, self.has_nat)

    # --- audio ------------------------------------------------------------------------------------------------------

    def load(self, x: str | Path | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """A file, or an array at `sample_rate` ((samples,) or (samples, channels)) -> mono float32 at the model's
        rate."""
        if isinstance(x, (str, Path)):
            return load_audio(x, self.sample_rate)
        if sample_rate is None:
            raise ValueError("transcribe(arrays) needs sample_rate=")
        arr = np.asarray(x)
        if np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.float32) / float(-np.iinfo(arr.dtype).min)
        arr = arr.astype(np.float32).mean(axis=1) if arr.ndim == 2 else arr.astype(np.float32)
        return resample(arr, sample_rate, self.sample_rate)

    def cut(self, wav: np.ndarray, max_chunk_seconds: float | None = None, cut_at_pauses: bool = True) -> list[Segment]:
        """(samples,) at the model's rate -> the stretches to decode, as Recognizer.cut. Any array-like works (asr
        serve hands in torch tensors: np.asarray reads them without importing torch)."""
        wav = np.asarray(wav, dtype=np.float32)
        sr = self.sample_rate
        f = self.features_cfg
        win, hop = round(sr * f["win_ms"] / 1000), round(sr * f["hop_ms"] / 1000)
        shortest = win + (MIN_FEATURE_FRAMES - 1) * hop
        max_s = MAX_CHUNK_SECONDS if max_chunk_seconds is None else max_chunk_seconds
        found = split_on_pauses(wav, sr, max_s) if cut_at_pauses else [Segment(0.0, wav.size / sr)]
        return [c for c in found if round(c.end * sr) - round(c.start * sr) >= shortest]

    def chunks(self, wav: np.ndarray, cuts: list[Segment]) -> list[np.ndarray]:
        """The waveform stretches of `cuts`: [(samples_i,)]."""
        wav, sr = np.asarray(wav, dtype=np.float32), self.sample_rate
        return [wav[round(c.start * sr) : round(c.end * sr)] for c in cuts]

    # --- decoding ---------------------------------------------------------------------------------------------------

    def decode_waveforms(
        self,
        chunks: Sequence[np.ndarray],
        options: DecodingOptions,
        batch_size: int | None = None,
        align_times: bool = True,
    ) -> list:
        """Mono waveforms at the model's rate -> one (tokens, score, token_times or None) each, in the order given."""
        batch_size = batch_size or int(self.cfg.decode.batch_size)
        chunks = [np.asarray(c, dtype=np.float32) for c in chunks]
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].size)
        out: list = [None] * len(chunks)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            for i, h in zip(idx, self.decode_batch([chunks[i] for i in idx], options, align_times)):
                out[i] = h
        return out

    def decode_batch(self, wavs: list[np.ndarray], o: DecodingOptions, align_times: bool = True) -> list:
        """One batch -> (tokens, score, token_times or None) each. With test-time VTLN (o.vtln_warps) the batch is
        encoded and searched once per warp and each utterance keeps its best-scoring hypothesis, as asr.decoding does;
        token times of attention hypotheses come from CTC alignment on the warp nearest 1.0."""
        runs = []
        for warp in o.warps:
            feats, lengths = compute_batch(wavs, self.features_cfg, warp)  # (batch, frames, dim), (batch,)
            enc = self.model.encode(feats, lengths)
            runs.append((enc, self.search(enc, o)))
        # max() keeps the first of equal scores: the earliest warp, as the torch path's stable sort does
        hyps = [max((found[b] for _, found in runs), key=lambda h: h[1]) for b in range(len(wavs))]
        enc = runs[min(range(len(runs)), key=lambda w: abs(o.warps[w] - 1.0))][0]
        blank = self.ids["blank"]
        if align_times and enc.ctc_log_probs is not None:  # attention hypotheses: token times by CTC alignment
            for b, (tokens, score, times) in enumerate(hyps):
                if times is None and tokens:
                    spans = ctc_align(enc.ctc_log_probs[b], int(enc.lengths[b]), tokens, blank)
                    if spans is not None:
                        hyps[b] = (tokens, score, [(s * enc.frame_seconds, e * enc.frame_seconds) for s, e in spans])
        return hyps

    def search(self, enc, o: DecodingOptions) -> list:
        """Encoder outputs of one batch -> the decoder's (tokens, score, token_times or None) for each utterance."""
        sos, eos, blank = self.ids["sos"], self.ids["eos"], self.ids["blank"]
        banned = (blank, self.ids["pad"], sos)
        if o.decoder == "ctc":
            paths = ctc_greedy(enc.ctc_log_probs, enc.lengths, blank)
            fs = enc.frame_seconds
            hyps = [(list(p.tokens), float(p.score), [(s * fs, e * fs) for s, e in p.spans]) for p in paths]
        elif o.decoder in ("nat-length", "nat-max", "mask-ctc"):
            hyps = self.decode_nat(enc, o)
        elif o.decoder == "greedy":
            found = greedy_search(self.model.steps(enc), enc.lengths, sos, eos, o.max_len_ratio, banned)
            hyps = [(list(h.tokens), float(h.score), None) for h in found]
        else:
            lists = beam_search(
                self.model.steps(enc),
                enc.lengths,
                sos,
                eos,
                beam_size=o.beam_size,
                length_penalty=o.length_penalty,
                max_len_ratio=o.max_len_ratio,
                nbest=1,
                ctc_log_probs=enc.ctc_log_probs,
                ctc_weight=o.ctc_weight if enc.ctc_log_probs is not None else 0.0,
                blank=blank,
                banned=banned,
                lm=self.lm if o.lm_weight > 0 else None,
                lm_weight=o.lm_weight,
            )
            hyps = [(list(hs[0].tokens), float(hs[0].score), None) if hs else ([], float("-inf"), None) for hs in lists]
        return hyps

    def decode_nat(self, enc, o: DecodingOptions) -> list:
        ids, head = self.ids, self.model.nat(enc)
        specials = dict(sos=ids["sos"], eos=ids["eos"], pad=ids["pad"], blank=ids["blank"])
        if o.decoder == "nat-length":
            found = nat_length(
                head, enc.lengths, **specials, length_from=o.length_from, ctc_log_probs=enc.ctc_log_probs
            )
        elif o.decoder == "nat-max":
            found = nat_max(head, enc.lengths, **specials, max_len_ratio=o.max_len_ratio)
        else:
            found = mask_ctc(
                head, enc.lengths, enc.ctc_log_probs, **specials, threshold=o.threshold, iterations=o.iterations
            )
        fs = enc.frame_seconds
        return [
            (
                list(h.tokens),
                float(h.score),
                None if h.token_times is None else [(s * fs, e * fs) for s, e in h.token_times],
            )
            for h in found
        ]

    def transcribe(
        self,
        inputs: Sequence[str | Path | np.ndarray],
        options: DecodingOptions | None = None,
        *,
        sample_rate: int | None = None,
        batch_size: int | None = None,
        max_chunk_seconds: float | None = None,
        cut_at_pauses: bool = True,
        align_times: bool = True,
        **given: Any,
    ) -> list[Transcript]:
        """Files or arrays -> one Transcript each, as Recognizer.transcribe (segments with times and scores)."""
        options = self.options(options, **given)
        wavs = [self.load(x, sample_rate) for x in inputs]
        cuts = [self.cut(w, max_chunk_seconds, cut_at_pauses) for w in wavs]
        chunks = [chunk for w, cs in zip(wavs, cuts) for chunk in self.chunks(w, cs)]
        decoded = iter(self.decode_waveforms(chunks, options, batch_size, align_times))
        return [self.assemble(w, cs, [next(decoded) for _ in cs]) for w, cs in zip(wavs, cuts)]

    def assemble(self, wav: np.ndarray, cuts: list[Segment], hyps: list) -> Transcript:
        wav = np.asarray(wav)
        timed = []
        for c, (tokens, score, token_times) in zip(cuts, hyps):
            times = None if token_times is None else [(c.start + s, c.start + e) for s, e in token_times]
            words = None
            if times is not None:
                words = [Word(text, times[a][0], times[b - 1][1]) for text, a, b in self.vocab.words(tokens)]
            timed.append(TimedText(c.start, c.end, self.vocab.decode(tokens), score, times, words, tokens))
        return Transcript.from_segments(timed, wav.size / self.sample_rate)
