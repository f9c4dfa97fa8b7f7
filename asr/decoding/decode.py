"""Encoder output + DecodingOptions -> hypotheses: the one place that picks a search for a decoder name.

    decode(network, encoded: Encoded, options, tokenizer, lm=None) -> [Hypothesis] per utterance

`Encoded` is what `Recognizer.encode` returns: the encoder output of a batch at each VTLN warp the options ask for,
and its CTC log-posteriors when the model has a trained CTC head. Each decoder runs once per warp; with several warps
each utterance keeps the hypotheses the model scores highest (test-time VTLN: the warp under which the model is most
sure of its answer is the one that best maps this speaker's vocal tract onto the ones it was trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from asr.decoding.ctc import ctc_align, ctc_greedy
from asr.decoding.nat import mask_ctc, nat_length, nat_max
from asr.decoding.options import DecodingOptions
from asr.decoding.search import FusionLM, Hypothesis, beam_search, greedy_search
from asr.model.transformer import SpeechTransformer


@dataclass
class Encoded:
    """The encoder output of a batch of audio, at each of `warps` (warp-major rows: warp 0's batch, then warp 1's)."""

    memory: Tensor  # (warps * batch, frames/4, d_model)
    lengths: Tensor  # (warps * batch,) valid encoder frames
    ctc_log_probs: Tensor | None  # (warps * batch, frames/4, vocab); None when the model has no trained CTC head
    warps: tuple[float, ...] = (1.0,)
    frame_seconds: float = 0.04  # one encoder frame (hop x 4 for the conv subsampling)

    @property
    def batch(self) -> int:
        return self.memory.size(0) // len(self.warps)

    def at_warp(self, i: int) -> "Encoded":
        rows = slice(i * self.batch, (i + 1) * self.batch)
        ctc = None if self.ctc_log_probs is None else self.ctc_log_probs[rows]
        return Encoded(self.memory[rows], self.lengths[rows], ctc, (self.warps[i],), self.frame_seconds)


Search = Callable[[SpeechTransformer, Encoded, DecodingOptions, object, "FusionLM | None"], list[list[Hypothesis]]]


def _specials(tokenizer) -> tuple[int, ...]:
    return (tokenizer.blank, tokenizer.pad, tokenizer.sos)  # never emitted


def _greedy(network, enc: Encoded, o: DecodingOptions, tok, lm) -> list[list[Hypothesis]]:
    hyps = greedy_search(network, enc.memory, enc.lengths, tok.sos, tok.eos, o.max_len_ratio, _specials(tok))
    return [[h] for h in hyps]


def _beam(network, enc: Encoded, o: DecodingOptions, tok, lm) -> list[list[Hypothesis]]:
    return beam_search(
        network,
        enc.memory,
        enc.lengths,
        tok.sos,
        tok.eos,
        beam_size=o.beam_size,
        length_penalty=o.length_penalty,
        max_len_ratio=o.max_len_ratio,
        nbest=o.nbest,
        ctc_log_probs=enc.ctc_log_probs,  # None (no trained CTC head): attention and LM only
        ctc_weight=o.ctc_weight,
        blank=tok.blank,
        banned=_specials(tok),
        lm=lm,
        lm_weight=o.lm_weight if lm is not None else 0.0,
    )


def _ctc(network, enc: Encoded, o: DecodingOptions, tok, lm) -> list[list[Hypothesis]]:
    paths = ctc_greedy(_need_ctc(enc, "ctc"), enc.lengths, tok.blank)
    return [[Hypothesis(p.tokens, p.score, token_times=p.spans)] for p in paths]


def _nat_length(network, enc: Encoded, o: DecodingOptions, tok, lm) -> list[list[Hypothesis]]:
    ctc = _need_ctc(enc, "nat-length:length_from=ctc") if o.length_from == "ctc" else None
    return [[h] for h in nat_length(network, enc.memory, enc.lengths, tok, o.length_from, ctc)]


def _nat_max(network, enc: Encoded, o: DecodingOptions, tok, lm) -> list[list[Hypothesis]]:
    return [[h] for h in nat_max(network, enc.memory, enc.lengths, tok, o.max_len_ratio)]


def _mask_ctc(network, enc: Encoded, o: DecodingOptions, tok, lm) -> list[list[Hypothesis]]:
    ctc = _need_ctc(enc, "mask-ctc")
    return [[h] for h in mask_ctc(network, enc.memory, enc.lengths, ctc, tok, o.threshold, o.iterations)]


def _need_ctc(enc: Encoded, decoder: str) -> Tensor:
    if enc.ctc_log_probs is None:
        raise ValueError(f"decoder {decoder} needs a trained CTC head (this model has loss.ctc_weight = 0)")
    return enc.ctc_log_probs


SEARCHES: dict[str, Search] = {
    "greedy": _greedy,
    "beam": _beam,
    "ctc": _ctc,
    "nat-length": _nat_length,
    "nat-max": _nat_max,
    "mask-ctc": _mask_ctc,
}


def decode(
    network: SpeechTransformer,
    encoded: Encoded,
    options: DecodingOptions,
    tokenizer,
    lm: FusionLM | None = None,
    align_times: bool = True,
) -> list[Hypothesis]:
    """The best hypothesis of each utterance, text filled in; with options.nbest > 1 the rest of its n-best list in
    `alternatives`. Token times (seconds from the start of the input) where the decoder has them (ctc, mask-ctc)
    and, with `align_times`, by CTC forced alignment for the others (2-3% of a beam search; scoring skips it)."""
    if tuple(encoded.warps) != options.warps:
        raise ValueError(
            f"the audio was encoded at warps {list(encoded.warps)} but the options ask for {list(options.warps)}: "
            "encode with warps=options.warps"
        )
    search = SEARCHES[options.decoder]
    runs = [search(network, encoded.at_warp(i), options, tokenizer, lm) for i in range(len(encoded.warps))]
    out = []
    for lists in zip(*runs):  # one utterance: its n-best list at each warp
        hyps = [h for hs in lists for h in hs]
        for h in hyps:
            h.text = tokenizer.decode(h.tokens)
            if h.token_times is not None:  # encoder frames -> seconds
                h.token_times = [(s * encoded.frame_seconds, e * encoded.frame_seconds) for s, e in h.token_times]
        if len(lists) > 1:  # several warps: each text once, with its best score
            best: dict[str, Hypothesis] = {}
            for h in hyps:
                if h.text not in best or h.score > best[h.text].score:
                    best[h.text] = h
            hyps = sorted(best.values(), key=lambda h: h.score, reverse=True)
        hyps = hyps[: options.nbest] or [Hypothesis([], float("-inf"))]
        hyps[0].alternatives = hyps[1:]
        out.append(hyps[0])
    if align_times:
        _align_untimed(out, encoded, tokenizer.blank)
    return out


def _align_untimed(hyps: list[Hypothesis], encoded: Encoded, blank: int) -> None:
    """Token times for best hypotheses that have none (attention decoders), by CTC forced alignment on the warp
    nearest 1.0; left None when the model has no CTC head or the tokens do not fit."""
    need = [i for i, h in enumerate(hyps) if h.token_times is None and h.tokens]
    if encoded.ctc_log_probs is None or not need:
        return
    enc = encoded.at_warp(min(range(len(encoded.warps)), key=lambda w: abs(encoded.warps[w] - 1.0)))
    rows = torch.tensor(need, device=enc.lengths.device)
    spans = ctc_align(enc.ctc_log_probs[rows], enc.lengths[rows], [hyps[i].tokens for i in need], blank)
    for i, found in zip(need, spans):
        if found is not None:
            hyps[i].token_times = [(s * encoded.frame_seconds, e * encoded.frame_seconds) for s, e in found]
