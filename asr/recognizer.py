"""A trained recogniser: everything needed to go from audio to text, and the self-contained model file.

    Recognizer(cfg, tokenizer)                 front end + CMVN + Speech-Transformer + tokenizer
    .recognize(wavs (batch, samples), lengths) -> list[str]   (or (text, score) with with_scores=True)
    .transcribe([path | array, ...])           -> list[str]
    .transcribe_segments([path | array, ...])  -> list[Transcript]: text + per-segment start/end/text/score
    .attach_lm(lm, weight)                     shallow fusion of a token LM (asr.lm) in every later beam search
    save_model(path, recognizer); load_model(path) -> Recognizer

The model file is a plain dict of tensors and primitive values (resolved config, tokenizer vocabulary, weights
including the CMVN statistics), so it loads with `torch.load(..., weights_only=True)`: no pickled code runs.

Transcription cuts every input at pauses (`asr.segment.split_on_pauses`) into chunks of at most
`max_chunk_seconds`, decodes the chunks of all inputs together in length-sorted batches, and joins each input's
chunk texts. Silence is never decoded, so an input with no speech transcribes to "".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from asr.audio import load_audio, prepare_array
from asr.config import Config, config_from_dict
from asr.decoding import beam_search, greedy_search
from asr.features import GlobalCMVN, make_frontend
from asr.model import SpeechTransformer
from asr.model_file import read_file, write_file
from asr.segment import MAX_CHUNK_SECONDS, split_on_pauses
from asr.text import CharTokenizer, tokenizer_from_dict
from asr.transcript import TimedText, Transcript

MODEL_FORMAT = "speech-transformer-asr/1"


@dataclass
class LMFusion:
    """An attached language model. A plain holder, not a submodule: the LM never goes into the model file."""

    lm: Any  # asr.lm.TransformerLM (or anything with check_vocabulary/init_state/step, see asr.decoding.search)
    weight: float


class Recognizer(nn.Module):
    def __init__(self, cfg: Config, tokenizer: CharTokenizer):
        super().__init__()
        cfg.model.vocab_size = len(tokenizer)
        cfg.model.n_features = cfg.features.dim
        self.cfg, self.tokenizer = cfg, tokenizer
        self.frontend = make_frontend(cfg.features)
        if cfg.features.cmvn not in ("global", "utterance"):
            raise ValueError(f"features.cmvn must be 'global' or 'utterance', got '{cfg.features.cmvn}'")
        self.cmvn = GlobalCMVN(cfg.features.dim, utterance_mean=cfg.features.cmvn == "utterance")
        self.network = SpeechTransformer(cfg.model)
        self.fusion: LMFusion | None = None

    def attach_lm(self, lm: Any, weight: float | None = None) -> "Recognizer":
        """Fuse `lm` (e.g. `asr.lm.load_lm(path)`, over this model's vocabulary) into every later beam search with
        `weight` (default: the config's decode.lm_weight); `None` detaches. Returns self, for chaining.

        Every decoding entry point (recognize, transcribe, ..., asr.evaluation.evaluate) then uses it, so their
        signatures stay as they were."""
        if lm is None:
            self.fusion = None
            return self
        lm.check_vocabulary(self.tokenizer)
        weight = self.cfg.decode.lm_weight if weight is None else float(weight)
        if not weight >= 0:
            raise ValueError(f"LM weight must be >= 0, got {weight}")
        self.fusion = LMFusion(lm.to(self.device).eval(), weight)
        return self

    @property
    def decode_ctc_weight(self) -> float:
        """The CTC weight for beam search; 0 when the CTC head was never trained."""
        return self.cfg.decode.ctc_weight if self.cfg.loss.ctc_weight > 0 else 0.0

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def features(self, wavs: Tensor, lengths: Tensor, warp: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(batch, samples) -> normalised (batch, frames, dim), frame lengths. warp: (batch,) VTLP factors."""
        feats, lengths = self.frontend(wavs, lengths, warp)
        return self.cmvn(feats, lengths), lengths

    @torch.no_grad()
    def recognize(
        self,
        wavs: Tensor,
        lengths: Tensor,
        beam_size: int | None = None,
        nbest: int = 1,
        ctc_weight: float | None = None,
        with_scores: bool = False,
        decoder: str | None = None,
    ) -> list[str] | list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """Padded waveforms -> text (one string each), or n-best (text, score) lists when nbest > 1, or the best
        (text, score) of each with `with_scores`. A score is the hypothesis log-probability, <eos> included
        (with an attached LM: the fused score).

        beam_size 1 is greedy attention decoding (the fast path); larger beams use joint CTC/attention scoring
        with `ctc_weight` (default: the config's) when the model was trained with CTC. An attached LM with a
        weight > 0 is fused into beam search, and then beam_size 1 is a beam search of width 1.
        `decoder` (default: cfg.decode.decoder) names another setup, e.g. "nat-length" or "mask-ctc"; its score
        is the attention decoder's log-probability of the text it found. With cfg.decode.vtln_warps, attention
        search runs once per warp factor and each utterance keeps its best-scoring hypotheses (test-time VTLN)."""
        dec = self.cfg.decode
        decoder = dec.decoder if decoder is None else decoder
        if decoder:
            return self._recognize_with(decoder, wavs, lengths, with_scores)
        beam_size = dec.beam_size if beam_size is None else beam_size
        ctc_weight = self.decode_ctc_weight if ctc_weight is None else ctc_weight
        if not dec.vtln_warps:
            return self._search(wavs, lengths, beam_size, nbest, ctc_weight, with_scores)
        check_warps(dec.vtln_warps)
        # Test-time VTLN: the warp under which the model is most sure of its answer is the one that best maps this
        # speaker's vocal tract onto the ones it was trained on (maximum-likelihood warp selection, per utterance).
        runs = [self._search(wavs, lengths, beam_size, nbest, ctc_weight, True, warp=a) for a in dec.vtln_warps]
        if nbest == 1:
            runs = [[[h] for h in run] for run in runs]  # each run: per row, an n-best list of (text, score)
        merged = []
        for row in zip(*runs):
            best: dict[str, float] = {}
            for text, score in (h for hs in row for h in hs):
                best[text] = max(score, best.get(text, float("-inf")))
            merged.append(sorted(best.items(), key=lambda h: h[1], reverse=True)[:nbest] or [("", float("-inf"))])
        if nbest > 1:
            return merged
        return [hs[0] if with_scores else hs[0][0] for hs in merged]

    def _search(
        self,
        wavs: Tensor,
        lengths: Tensor,
        beam_size: int,
        nbest: int,
        ctc_weight: float,
        with_scores: bool,
        warp: float | None = None,
    ) -> list:
        """Attention search (greedy for beam 1 without an LM), on features warped by `warp` if given."""
        dec, tok = self.cfg.decode, self.tokenizer
        factors = None if warp is None or warp == 1.0 else torch.full((wavs.size(0),), float(warp), device=wavs.device)
        feats, feat_lengths = self.features(wavs, lengths, factors)
        memory, memory_lengths = self.network.encoder(feats, feat_lengths)  # (batch, frames/4, d_model)
        fusion = self.fusion if self.fusion is not None and self.fusion.weight > 0 else None
        if beam_size <= 1 and nbest == 1 and fusion is None:
            ids = greedy_search(self.network.decoder, memory, memory_lengths, tok.sos, tok.eos, dec.max_len_ratio)
            if with_scores:  # greedy search keeps no scores: one teacher-forced pass gives them
                scores = self.sequence_log_probs(memory, memory_lengths, ids)
                return [(tok.decode(seq), score) for seq, score in zip(ids, scores)]
            return [tok.decode(seq) for seq in ids]
        ctc_log_probs = self.network.ctc(memory).log_softmax(-1) if ctc_weight > 0 else None
        hyps = beam_search(
            self.network.decoder,
            memory,
            memory_lengths,
            tok.sos,
            tok.eos,
            beam_size=max(beam_size, nbest),
            length_penalty=dec.length_penalty,
            max_len_ratio=dec.max_len_ratio,
            nbest=nbest,
            ctc_log_probs=ctc_log_probs,
            ctc_weight=ctc_weight,
            blank=tok.blank,
            banned=(tok.blank, tok.pad, tok.sos),
            lm=fusion.lm.to(memory.device) if fusion else None,
            lm_weight=fusion.weight if fusion else 0.0,
        )
        if nbest == 1 and with_scores:
            return [(tok.decode(h[0].tokens), h[0].score) if h else ("", float("-inf")) for h in hyps]
        if nbest == 1:
            return [tok.decode(h[0].tokens) if h else "" for h in hyps]
        return [[(tok.decode(h.tokens), h.score) for h in hs] for hs in hyps]

    def _recognize_with(self, decoder: str, wavs: Tensor, lengths: Tensor, with_scores: bool) -> list:
        from asr.decoding.setups import parse_decoder

        setup = parse_decoder(decoder)
        setup.check(self)
        texts = setup.run(self, wavs, lengths)
        if not with_scores:
            return texts
        feats, feat_lengths = self.features(wavs, lengths)
        memory, memory_lengths = self.network.encoder(feats, feat_lengths)
        scores = self.sequence_log_probs(memory, memory_lengths, [self.tokenizer.encode(t) for t in texts])
        return list(zip(texts, scores))

    def sequence_log_probs(self, memory: Tensor, memory_lengths: Tensor, seqs: list[list[int]]) -> list[float]:
        """log P(seq <eos> | audio) under the attention decoder, for each row's token ids (no <sos>/<eos>)."""
        tok = self.tokenizer
        lengths = torch.tensor([len(q) for q in seqs], device=memory.device)
        n = int(lengths.max()) + 1
        ys_in = torch.full((len(seqs), n), tok.pad, dtype=torch.long, device=memory.device)
        ys_in[:, 0] = tok.sos
        ys_out = ys_in.clone()
        for i, q in enumerate(seqs):
            ys_in[i, 1 : len(q) + 1] = torch.tensor(q, dtype=torch.long)
            ys_out[i, : len(q)] = ys_in[i, 1 : len(q) + 1]
            ys_out[i, len(q)] = tok.eos
        logits, _ = self.network.decoder(ys_in, memory, memory_lengths, token_lengths=lengths + 1)
        logp = logits.float().log_softmax(-1).gather(2, ys_out[..., None]).squeeze(2)
        keep = torch.arange(n, device=memory.device)[None, :] <= lengths[:, None]
        return torch.where(keep, logp, torch.zeros_like(logp)).sum(1).tolist()

    def transcribe(
        self,
        inputs: Sequence[str | Path | np.ndarray | Tensor],
        sample_rate: int | None = None,
        beam_size: int | None = None,
        batch_size: int | None = None,
        ctc_weight: float | None = None,
        max_chunk_seconds: float | None = None,
    ) -> list[str]:
        """Files (any format/rate/channels soundfile reads) or arrays (give `sample_rate`) -> one text each.

        Long inputs are cut at pauses into chunks of at most `max_chunk_seconds` (default 20) and the chunk texts
        joined; an input with no speech gives ""."""
        found = self.transcribe_segments(inputs, sample_rate, beam_size, batch_size, ctc_weight, max_chunk_seconds)
        return [t.text for t in found]

    def transcribe_segments(
        self,
        inputs: Sequence[str | Path | np.ndarray | Tensor],
        sample_rate: int | None = None,
        beam_size: int | None = None,
        batch_size: int | None = None,
        ctc_weight: float | None = None,
        max_chunk_seconds: float | None = None,
    ) -> list[Transcript]:
        """Like `transcribe`, but each input's `Transcript`: text, duration and the decoded segments with their
        start/end (seconds), text and score (log-probability). Unreadable files raise `AudioError` naming them."""
        wavs = [self.load_input(x, sample_rate) for x in inputs]
        return self.transcribe_waveforms(wavs, beam_size, batch_size, ctc_weight, max_chunk_seconds)

    def load_input(self, x: str | Path | np.ndarray | Tensor, sample_rate: int | None = None) -> Tensor:
        """A file, or an array at `sample_rate`, -> mono (samples,) at the model's rate."""
        sr = self.cfg.features.sample_rate
        if isinstance(x, (str, Path)):
            return load_audio(x, sr)
        if sample_rate is None:
            raise ValueError("transcribe(arrays) needs sample_rate=")
        return prepare_array(x, sample_rate, sr)

    def transcribe_waveforms(
        self,
        wavs: list[Tensor],
        beam_size: int | None = None,
        batch_size: int | None = None,
        ctc_weight: float | None = None,
        max_chunk_seconds: float | None = None,
    ) -> list[Transcript]:
        """Mono waveforms at the model's rate -> transcripts; the chunks of all of them are decoded together."""
        sr = self.cfg.features.sample_rate
        max_s = MAX_CHUNK_SECONDS if max_chunk_seconds is None else max_chunk_seconds
        cuts = [split_on_pauses(w, sr, max_s) for w in wavs]
        chunks = [w[round(c.start * sr) : round(c.end * sr)] for w, cs in zip(wavs, cuts) for c in cs]
        decoded = iter(self.recognize_waveforms(chunks, beam_size, batch_size, ctc_weight, with_scores=True))
        out = []
        for w, cs in zip(wavs, cuts):
            timed = [TimedText(c.start, c.end, *next(decoded)) for c in cs]
            out.append(Transcript.from_segments(timed, w.numel() / sr))
        return out

    def recognize_waveforms(
        self,
        wavs: list[Tensor],
        beam_size: int | None = None,
        batch_size: int | None = None,
        ctc_weight: float | None = None,
        with_scores: bool = False,
    ) -> list[str] | list[tuple[str, float]]:
        """Mono waveforms at the model's rate, each decoded whole -> text (or (text, score)), batched by similar
        length."""
        self.eval()
        batch_size = batch_size or self.cfg.decode.batch_size
        order = sorted(range(len(wavs)), key=lambda i: wavs[i].numel())
        texts: list = [""] * len(wavs)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            padded, lengths = pad_waveforms([wavs[i] for i in idx])
            out = self.recognize(
                padded.to(self.device),
                lengths.to(self.device),
                beam_size,
                ctc_weight=ctc_weight,
                with_scores=with_scores,
            )
            for i, text in zip(idx, out):
                texts[i] = text
        return texts


def check_warps(warps: Sequence[float]) -> None:
    """decode.vtln_warps must be frequency-warp factors near 1 (a vocal tract at most ~1.5x longer or shorter)."""
    bad = [a for a in warps if not (isinstance(a, (int, float)) and 0.67 <= a <= 1.5)]
    if bad:
        raise ValueError(f"decode.vtln_warps must be warp factors in [0.67, 1.5] (e.g. [0.92, 1.0, 1.08]), got {bad}")


def pad_waveforms(wavs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """list of (samples,) -> (batch, max_samples) zero-padded, lengths (batch,)."""
    lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long)
    padded = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        padded[i, : w.numel()] = w
    return padded, lengths


def save_model(path: str | Path, recognizer: Recognizer, extra: dict | None = None) -> Path:
    """Write the self-contained model file (weights, CMVN, config, tokenizer)."""
    state = {k: v.detach().cpu() for k, v in recognizer.state_dict().items()}
    blob = {
        "format": MODEL_FORMAT,
        "config": recognizer.cfg.to_dict(),
        "tokenizer": recognizer.tokenizer.to_dict(),
        "state_dict": state,
        "extra": extra or {},
    }
    return write_file(path, blob)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    blob = read_file(path, MODEL_FORMAT, "model")
    rec = Recognizer(config_from_dict(blob["config"], strict=False), tokenizer_from_dict(blob["tokenizer"]))
    rec.load_state_dict(blob["state_dict"])
    return rec.to(device).eval()
