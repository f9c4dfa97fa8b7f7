"""A trained recogniser: everything needed to go from audio to text, and the self-contained model file.

Three calls, and every entry point (`asr transcribe`, `asr evaluate`, `asr benchmark`, the Python API) uses them:

    rec = load_model("exp/fsdd/model.pt")
    options = rec.options(beam_size=10)                  the model's decode config + what you give -> DecodingOptions
    encoded = rec.encode(wavs (batch, samples), lengths)  front end + CMVN + encoder (+ CTC head) -> Encoded
    hyps = rec.decode(encoded, options)                   -> [Hypothesis(text, tokens, score, token_times)] per row
    rec.transcribe(["a.wav", array, ...], options)        files/arrays of any length -> [Transcript(text, segments)]

`transcribe` cuts every input at pauses (`asr.segment.split_on_pauses`) into chunks of at most `max_chunk_seconds`,
sorts the chunks of all inputs by length, encodes and decodes them in batches (the encoder runs once per chunk and
VTLN warp), and stitches each input's chunks into a `Transcript` with segment times. Silence is never decoded, so an
input with no speech transcribes to "". `cut_at_pauses=False` decodes each input whole (what `asr evaluate` and
`asr benchmark` do with the utterances of a manifest).

`transcribe` is three public steps, which the server (asr.serve) runs with its own batching in the middle:
`cut(wav)` -> [Segment] at pauses, `decode_waveforms(chunks, options)` -> [Hypothesis], `assemble(wav, cuts, hyps)`
-> Transcript (segment, token and word times).

    save_model(path, recognizer); load_model(path) -> Recognizer

The model file is a plain dict of tensors and primitive values (resolved config, tokenizer vocabulary, weights
including the CMVN statistics), so it loads with `torch.load(..., weights_only=True)`: no pickled code runs.
Decoding choices never change the loaded model's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from asr.audio import load_audio, prepare_array
from asr.config import Config, config_from_dict
from asr.data.dataset import load_utterance
from asr.data.manifest import Utterance
from asr.decoding.decode import Encoded, decode
from asr.decoding.options import DecodingOptions, OptionsError, check_heads, keyword, options_for_model
from asr.decoding.search import Hypothesis
from asr.features import GlobalCMVN, frame_sizes, make_frontend
from asr.model import SpeechTransformer
from asr.model_file import ModelFileError, check_sizes, describe, read_file, write_file
from asr.segment import MAX_CHUNK_SECONDS, Segment, split_on_pauses
from asr.text import CharTokenizer, tokenizer_from_dict
from asr.transcript import TimedText, Transcript, Word

MODEL_FORMAT = "speech-transformer-asr/1"
SUBSAMPLING = 4  # encoder frames per feature frame (two stride-2 convolutions)
MIN_FEATURE_FRAMES = 7  # the conv front end needs at least this many frames to give one encoder frame

AudioInput = str | Path | np.ndarray | Tensor | Utterance


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
        self.lm: Any = None  # an attached LM (asr.lm.TransformerLM): not a submodule, never in the model file

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def has_ctc(self) -> bool:
        """Was the CTC head trained? (An untrained head exists in every model and must not be decoded with.)"""
        return self.cfg.loss.ctc_weight > 0

    @property
    def has_nat(self) -> bool:
        return self.network.has_nat and self.cfg.loss.nat_weight > 0

    def attach_lm(self, lm: Any) -> "Recognizer":
        """Make `lm` (e.g. `asr.lm.load_lm(path)`, over this model's vocabulary) available to beam search; options
        with lm_weight > 0 fuse it. `None` detaches. Returns self, for chaining."""
        if lm is not None:
            lm.check_vocabulary(self.tokenizer)
            lm = lm.to(self.device).eval()
        object.__setattr__(self, "lm", lm)  # a plain attribute: nn.Module would register it, into the model file
        return self

    # --- 1. what to decode with ---------------------------------------------------------------------------------

    def options(
        self, options: DecodingOptions | None = None, spell: Callable[[str], str] = keyword, **given: Any
    ) -> DecodingOptions:
        """DecodingOptions for this model: `options` (default: the model's decode config) with the options `given`
        (None values are not given; `decoder` may be a setup such as "beam10:ctc_weight=0.5"), checked against what
        the model has. Errors name the options as `spell` writes them (keyword= here, --flags on the command line).

        The CTC weight of a model whose CTC head was never trained is 0 unless asked for (then it is an error), and
        so is the LM weight without an attached LM."""
        no_lm = "needs a language model (attach one: --lm)" if self.lm is None else ""
        opts = options_for_model(options, self.cfg.decode, given, spell, self.has_ctc, no_lm)
        self.check(opts)
        return opts

    def check(self, options: DecodingOptions) -> None:
        """Raise OptionsError if this model cannot decode with `options` (a head it lacks, an LM it has not got)."""
        check_heads(options, self.has_ctc, self.has_nat)
        if options.decoder == "beam" and options.lm_weight > 0 and self.lm is None:
            raise OptionsError(f"lm_weight {options.lm_weight:g} needs a language model (Recognizer.attach_lm)")

    # --- 2. audio -> encoder output -------------------------------------------------------------------------------

    def features(self, wavs: Tensor, lengths: Tensor, warp: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(batch, samples) -> normalised (batch, frames, dim), frame lengths. warp: (batch,) VTLP factors."""
        feats, lengths = self.frontend(wavs, lengths, warp)
        return self.cmvn(feats, lengths), lengths

    @torch.no_grad()
    def encode(self, wavs: Tensor | Sequence[Tensor], lengths: Tensor | None = None, warps=(1.0,)) -> Encoded:
        """Waveforms at the model's rate, padded (batch, samples) with `lengths`, or a list of (samples,) ->
        the encoder output at each VTLN warp in `warps` (use `options.warps`), and the CTC log-posteriors."""
        self.eval()
        if lengths is None:
            wavs, lengths = pad_waveforms(list(wavs))
        wavs, lengths = wavs.to(self.device), lengths.to(self.device)
        memories, memory_lengths, ctcs = [], [], []
        for a in warps:  # one encoder pass per warp: memory stays that of one batch
            factors = None if a == 1.0 else torch.full((wavs.size(0),), float(a), device=wavs.device)
            memory, m_lengths = self.network.encode(*self.features(wavs, lengths, factors))  # (batch, frames/4, d)
            memories.append(memory)
            memory_lengths.append(m_lengths)
            if self.has_ctc:
                ctcs.append(self.network.ctc_log_probs(memory))
        frame_s = SUBSAMPLING * frame_sizes(self.cfg.features)[1] / self.cfg.features.sample_rate
        ctc = torch.cat(ctcs) if ctcs else None
        return Encoded(torch.cat(memories), torch.cat(memory_lengths), ctc, tuple(warps), frame_s)

    # --- 3. encoder output -> text --------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(
        self, encoded: Encoded, options: DecodingOptions | None = None, align_times: bool = True
    ) -> list[Hypothesis]:
        """The best hypothesis of each encoded utterance (with `alternatives` when options.nbest > 1), with token
        times (`align_times=False`: only where the decoder has its own, for scoring that needs no times)."""
        options = self.options() if options is None else options
        self.check(options)
        lm = self.lm if options.lm_weight > 0 else None
        return decode(self.network, encoded, options, self.tokenizer, lm, align_times)

    # --- files and arrays of any length -> transcripts ------------------------------------------------------------

    def transcribe(
        self,
        inputs: Sequence[AudioInput],
        options: DecodingOptions | None = None,
        *,
        sample_rate: int | None = None,
        batch_size: int | None = None,
        max_chunk_seconds: float | None = None,
        cut_at_pauses: bool = True,
        align_times: bool = True,
        **given: Any,
    ) -> list[Transcript]:
        """Files (any format/rate/channels soundfile reads), manifest `Utterance`s (their offset/duration span) or
        arrays (give `sample_rate`) -> one `Transcript` each: text, duration, and the decoded segments with start/end
        (seconds), text, score, token and word times (where the decoder has them). Decoding options: `options`
        and/or keywords (beam_size=10, ...).

        Long inputs are cut at pauses into chunks of at most `max_chunk_seconds` (default 20); with
        `cut_at_pauses=False` each input is decoded whole; `align_times=False` skips the word times of attention
        decoders (scoring needs only text). Unreadable files raise `AudioError` naming them.
        The three steps (`cut`, `decode_waveforms`, `assemble`) are public so the server (asr.serve) can batch the
        chunks of concurrent requests together and still give what this call gives."""
        options = self.options(options, **given)
        wavs = [self.load(x, sample_rate) for x in inputs]
        cuts = [self.cut(w, max_chunk_seconds, cut_at_pauses) for w in wavs]
        chunks = [c for w, cs in zip(wavs, cuts) for c in self.chunks(w, cs)]
        decoded = iter(self.decode_waveforms(chunks, options, batch_size, align_times))
        return [self.assemble(w, cs, [next(decoded) for _ in cs]) for w, cs in zip(wavs, cuts)]

    def cut(self, wav: Tensor, max_chunk_seconds: float | None = None, cut_at_pauses: bool = True) -> list[Segment]:
        """(samples,) at the model's rate -> the stretches to decode: cut at pauses into at most `max_chunk_seconds`
        (or the whole input), without those too short to give one encoder frame (silence is never decoded)."""
        sr = self.cfg.features.sample_rate
        max_s = MAX_CHUNK_SECONDS if max_chunk_seconds is None else max_chunk_seconds
        win, hop = frame_sizes(self.cfg.features)
        shortest = win + (MIN_FEATURE_FRAMES - 1) * hop
        found = split_on_pauses(wav, sr, max_s) if cut_at_pauses else [Segment(0.0, wav.numel() / sr)]
        return [c for c in found if round(c.end * sr) - round(c.start * sr) >= shortest]

    def chunks(self, wav: Tensor, cuts: list[Segment]) -> list[Tensor]:
        """The waveform stretches of `cuts`: [(samples_i,)]."""
        sr = self.cfg.features.sample_rate
        return [wav[round(c.start * sr) : round(c.end * sr)] for c in cuts]

    def decode_waveforms(
        self,
        chunks: Sequence[Tensor],
        options: DecodingOptions,
        batch_size: int | None = None,
        align_times: bool = True,
    ) -> list[Hypothesis]:
        """Mono waveforms at the model's rate, each decoded whole, in batches of similar length (less padding):
        one Hypothesis each, in the order given. Token times are seconds from each chunk's start."""
        batch_size = batch_size or self.cfg.decode.batch_size
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].numel())
        hyps: list[Hypothesis | None] = [None] * len(chunks)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            encoded = self.encode([chunks[i] for i in idx], warps=options.warps)
            for i, h in zip(idx, self.decode(encoded, options, align_times)):
                hyps[i] = h
        return hyps  # type: ignore[return-value]

    def assemble(self, wav: Tensor, cuts: list[Segment], hyps: Sequence[Hypothesis]) -> Transcript:
        """One input's chunk hypotheses -> its Transcript, times shifted from chunk to input (seconds)."""
        timed = []
        for c, h in zip(cuts, hyps):
            times = None if h.token_times is None else [(c.start + s, c.start + e) for s, e in h.token_times]
            words = None
            if times is not None:
                words = [Word(text, times[a][0], times[b - 1][1]) for text, a, b in self.tokenizer.words(h.tokens)]
            timed.append(TimedText(c.start, c.end, h.text, h.score, times, words, list(h.tokens)))
        return Transcript.from_segments(timed, wav.numel() / self.cfg.features.sample_rate)

    def load(self, x: AudioInput, sample_rate: int | None = None) -> Tensor:
        """A file, a manifest utterance, or an array at `sample_rate` -> mono (samples,) at the model's rate."""
        sr = self.cfg.features.sample_rate
        if isinstance(x, Utterance):
            return load_utterance(x, sr)
        if isinstance(x, (str, Path)):
            return load_audio(x, sr)
        if sample_rate is None:
            raise ValueError("transcribe(arrays) needs sample_rate=")
        return prepare_array(x, sample_rate, sr)


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


# Front-end sizes no speech model uses (recipes: 80 mels, n_fft 512). Neither is tied to the weights (n_mels is not
# for MFCC), and building 1024 mels x n_fft 65536 takes 30 s, 20000 mels a minute: a corrupt file must not.
MAX_N_MELS = 1024
MAX_N_FFT = 8192  # a 0.5 s window at 16 kHz


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    """The Recognizer of a model file (see save_model), on `device`, in eval mode.

    Documented errors, both naming the file: FileNotFoundError if there is no file, and ModelFileError (a
    ValueError) for anything else -- not a model file, another format version, a damaged archive, missing or
    mistyped entries, a config the weights do not fit. No other exception escapes, whatever the file holds
    (tests/test_fuzz.py)."""
    blob = read_file(path, MODEL_FORMAT, "model")
    try:
        rec = _recognizer_from_blob(path, blob)
    except ModelFileError:
        raise
    except Exception as e:  # the blob is data from a file: a KeyError, TypeError, ... building from it is damage
        raise ModelFileError(f"{path}: damaged model file ({describe(e)})") from None
    return rec.to(device).eval()


def _recognizer_from_blob(path: str | Path, blob: dict) -> Recognizer:
    """Config, tokenizer and weights -> Recognizer; sizes are checked before anything is built from them."""
    cfg = config_from_dict(blob["config"], strict=False)
    tokenizer = tokenizer_from_dict(blob["tokenizer"])
    state = blob["state_dict"]
    f, m = cfg.features, cfg.model
    if not (f.n_mels <= MAX_N_MELS and f.n_fft <= MAX_N_FFT):
        raise ModelFileError(f"{path}: damaged model file: features.n_mels {f.n_mels}, n_fft {f.n_fft} are implausible")
    sizes = {"model.d_model": m.d_model, "model.d_ff": m.d_ff, "model.conv_channels": m.conv_channels}
    sizes["features.dim"] = f.dim  # the CMVN statistics' length
    if m.encoder == "conformer":
        sizes["model.conv_kernel"] = m.conv_kernel  # a huge kernel would be allocated before load_state_dict
    check_sizes(path, state, "model", sizes, m.n_encoder_layers + m.n_decoder_layers + m.nat_decoder_layers)
    rec = Recognizer(cfg, tokenizer)
    rec.load_state_dict(state)  # exact names and shapes: a RuntimeError listing the mismatches
    return rec
