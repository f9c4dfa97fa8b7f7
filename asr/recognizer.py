"""A trained recogniser: everything needed to go from audio to text, and the self-contained model file.

    Recognizer(cfg, tokenizer)                 front end + CMVN + Speech-Transformer + tokenizer
    .recognize(wavs (batch, samples), lengths) -> list[str]
    .transcribe([path | array, ...])           -> list[str]
    save_model(path, recognizer); load_model(path) -> Recognizer

The model file is a plain dict of tensors and primitive values (resolved config, tokenizer vocabulary, weights
including the CMVN statistics), so it loads with `torch.load(..., weights_only=True)`: no pickled code runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from asr.audio import load_audio, prepare_array
from asr.config import Config, config_from_dict
from asr.decoding import beam_search, greedy_search
from asr.features import GlobalCMVN, make_frontend
from asr.model import SpeechTransformer
from asr.text import CharTokenizer, tokenizer_from_dict

MODEL_FORMAT = "speech-transformer-asr/1"


class Recognizer(nn.Module):
    def __init__(self, cfg: Config, tokenizer: CharTokenizer):
        super().__init__()
        cfg.model.vocab_size = len(tokenizer)
        cfg.model.n_features = cfg.features.dim
        self.cfg, self.tokenizer = cfg, tokenizer
        self.frontend = make_frontend(cfg.features)
        self.cmvn = GlobalCMVN(cfg.features.dim)
        self.network = SpeechTransformer(cfg.model)

    @property
    def decode_ctc_weight(self) -> float:
        """The CTC weight for beam search; 0 when the CTC head was never trained."""
        return self.cfg.decode.ctc_weight if self.cfg.loss.ctc_weight > 0 else 0.0

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def features(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, samples) -> normalised (batch, frames, dim), frame lengths."""
        feats, lengths = self.frontend(wavs, lengths)
        return self.cmvn(feats, lengths), lengths

    @torch.no_grad()
    def recognize(
        self,
        wavs: Tensor,
        lengths: Tensor,
        beam_size: int | None = None,
        nbest: int = 1,
        ctc_weight: float | None = None,
    ) -> list[str] | list[list[tuple[str, float]]]:
        """Padded waveforms -> text (one string each), or n-best (text, score) lists when nbest > 1.

        beam_size 1 is greedy attention decoding (the fast path); larger beams use joint CTC/attention scoring
        with `ctc_weight` (default: the config's) when the model was trained with CTC."""
        dec = self.cfg.decode
        beam_size = dec.beam_size if beam_size is None else beam_size
        ctc_weight = self.decode_ctc_weight if ctc_weight is None else ctc_weight
        feats, feat_lengths = self.features(wavs, lengths)
        memory, memory_lengths = self.network.encoder(feats, feat_lengths)  # (batch, frames/4, d_model)
        tok = self.tokenizer
        if beam_size <= 1 and nbest == 1:
            ids = greedy_search(self.network.decoder, memory, memory_lengths, tok.sos, tok.eos, dec.max_len_ratio)
            return [tok.decode(seq) for seq in ids]
        ctc_log_probs = self.network.ctc(memory).log_softmax(-1) if ctc_weight > 0 else None
        hyps = beam_search(
            self.network.decoder, memory, memory_lengths, tok.sos, tok.eos,
            beam_size=max(beam_size, nbest), length_penalty=dec.length_penalty,
            max_len_ratio=dec.max_len_ratio, nbest=nbest,
            ctc_log_probs=ctc_log_probs, ctc_weight=ctc_weight, blank=tok.blank, banned=(tok.blank, tok.pad, tok.sos),
        )
        if nbest == 1:
            return [tok.decode(h[0].tokens) if h else "" for h in hyps]
        return [[(tok.decode(h.tokens), h.score) for h in hs] for hs in hyps]

    def transcribe(
        self,
        inputs: Sequence[str | Path | np.ndarray | Tensor],
        sample_rate: int | None = None,
        beam_size: int | None = None,
        batch_size: int | None = None,
        ctc_weight: float | None = None,
    ) -> list[str]:
        """Files (any format/rate/channels soundfile reads) or arrays (give `sample_rate`) -> one text each."""
        sr = self.cfg.features.sample_rate
        wavs = []
        for x in inputs:
            if isinstance(x, (str, Path)):
                wavs.append(load_audio(x, sr))
            else:
                if sample_rate is None:
                    raise ValueError("transcribe(arrays) needs sample_rate=")
                wavs.append(prepare_array(x, sample_rate, sr))
        return self.recognize_waveforms(wavs, beam_size, batch_size, ctc_weight)

    def recognize_waveforms(
        self,
        wavs: list[Tensor],
        beam_size: int | None = None,
        batch_size: int | None = None,
        ctc_weight: float | None = None,
    ) -> list[str]:
        """Mono waveforms at the model's rate -> text, batched by similar length."""
        self.eval()
        batch_size = batch_size or self.cfg.decode.batch_size
        order = sorted(range(len(wavs)), key=lambda i: wavs[i].numel())
        texts: list[str] = [""] * len(wavs)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            padded, lengths = pad_waveforms([wavs[i] for i in idx])
            out = self.recognize(padded.to(self.device), lengths.to(self.device), beam_size, ctc_weight=ctc_weight)
            for i, text in zip(idx, out):
                texts[i] = text
        return texts


def pad_waveforms(wavs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """list of (samples,) -> (batch, max_samples) zero-padded, lengths (batch,)."""
    lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long)
    padded = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        padded[i, : w.numel()] = w
    return padded, lengths


def save_model(path: str | Path, recognizer: Recognizer, extra: dict | None = None) -> Path:
    """Write the self-contained model file (weights, CMVN, config, tokenizer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in recognizer.state_dict().items()}
    blob = {
        "format": MODEL_FORMAT,
        "config": recognizer.cfg.to_dict(),
        "tokenizer": recognizer.tokenizer.to_dict(),
        "state_dict": state,
        "extra": extra or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written model
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable model file ({e})") from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a {MODEL_FORMAT} model file")
    rec = Recognizer(config_from_dict(blob["config"]), tokenizer_from_dict(blob["tokenizer"]))
    rec.load_state_dict(blob["state_dict"])
    return rec.to(device).eval()
