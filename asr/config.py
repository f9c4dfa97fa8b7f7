"""One config system: nested dataclasses with defaults, loaded from YAML, overridden from the command line.

A recipe's `conf.yaml` mirrors `Config` (sections `features`, `specaug`, `model`, `loss`, `data`, `train`,
`decode`, `tokenizer`);
`key.sub=value` overrides (`model.d_model=256`) are applied on top. Unknown keys are errors, not silently ignored,
so a typo in a recipe fails at once. The resolved config is stored in the model file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class FeatureConfig:
    """Front end: 25 ms / 10 ms frames -> log-mel fbank or MFCC (+ deltas). Kaldi conventions by default."""

    kind: str = "fbank"  # "fbank" (n_mels dims) or "mfcc" (3 * n_mfcc dims: cepstra + deltas + delta-deltas)
    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    n_mels: int = 80
    n_mfcc: int = 13
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means Nyquist + high_freq (Kaldi convention)
    window: str = "povey"  # povey | hann | hamming
    preemphasis: float = 0.97
    remove_dc: bool = True
    dither: float = 0.0  # Gaussian dither amplitude (int16 scale / 32768); training only
    delta_window: int = 2  # regression half-width for deltas (HTK/Kaldi: 2 -> 5 frames)
    cmvn: str = "global"  # "global": corpus mean and std; "utterance": each utterance's own mean, then corpus std

    @property
    def dim(self) -> int:
        return self.n_mels if self.kind == "fbank" else 3 * self.n_mfcc


@dataclass
class SpecAugmentConfig:
    """SpecAugment (Park et al. 2019), applied to normalised features in training only."""

    enabled: bool = True
    freq_masks: int = 2
    freq_width: int = 10  # max bins per frequency mask (of 80; scaled for other dims)
    time_masks: int = 2
    time_width: float = 0.05  # max fraction of the utterance per time mask
    time_width_max: int = 40  # ... but at most this many frames
    time_warp: int = 0  # max warp distance in frames (Park et al. use 5 for 10 ms frames); 0 = off


@dataclass
class ModelConfig:
    """Speech-Transformer dimensions (defaults: ~2.6 M parameters)."""

    d_model: int = 144
    n_heads: int = 4
    d_ff: int = 576
    n_encoder_layers: int = 6
    n_decoder_layers: int = 3
    conv_channels: int = 64  # conv subsampling width; d_model-wide convs cost more than the whole Transformer
    encoder: str = "transformer"  # or "conformer" (asr/model/conformer.py: macaron FF, conv module, relative positions)
    conv_kernel: int = 15  # conformer: depthwise convolution width over encoder frames (odd)
    nat_decoder_layers: int = 0  # non-autoregressive decoder head (asr/model/nat.py); 0 = none
    nat_max_length: int = 400  # the NAT length classifier's largest token count
    dropout: float = 0.1
    attn_dropout: float = 0.0  # on attention weights; > 0 sends CPU attention to a ~10x slower kernel
    # Set from the data at training time; stored so a model file rebuilds the same network.
    n_features: int = 80
    vocab_size: int = 0


@dataclass
class LossConfig:
    """The training objective: (1 - ctc_weight) * attention CE + ctc_weight * CTC + guided attention."""

    label_smoothing: float = 0.1
    ctc_weight: float = 0.3  # joint CTC/attention (Kim et al. 2017); 0 = attention only
    # Intermediate CTC (Lee & Watanabe 2021): the CTC loss also on the outputs of these encoder layers (numbered
    # from 1, through the shared CTC head), weighted inter_ctc_weight within the CTC share. Training only.
    inter_ctc_layers: list = field(default_factory=list)
    inter_ctc_weight: float = 0.3
    guided_attn_weight: float = 1.0  # guided attention on the cross-attention (Tachibana et al. 2017); 0 = off
    guided_attn_sigma: float = 0.3  # width g of the allowed band around the diagonal, in fractions of the length
    guided_attn_layers: list = field(default_factory=list)  # decoder layers to guide (indices); empty = all
    guided_attn_heads: int = 0  # guide the first k heads of each layer; 0 = all
    guided_attn_decay: float = 1.0  # weight multiplied by this every epoch (1 = constant)
    # Scheduled sampling (Bengio et al. 2015; two-pass for Transformers, Mihaylova & Martins 2019): with probability
    # p the decoder is fed its own previous prediction instead of the reference token; p rises linearly from 0 at
    # epoch `scheduled_sampling_start` to `scheduled_sampling` over `scheduled_sampling_ramp` epochs. 0 = off.
    scheduled_sampling: float = 0.0
    scheduled_sampling_start: int = 0
    scheduled_sampling_ramp: int = 5
    nat_weight: float = 0.0  # weight of the non-autoregressive head's loss (needs model.nat_decoder_layers > 0)
    nat_length_weight: float = 0.1  # weight of its length classifier's loss
    # Speaker-adversarial training (asr/model/losses.py SpeakerAdversary): a speaker classifier on the encoder
    # frames behind a gradient reversal, weighted this much; speakers are the training manifest's "speaker" field
    # (utterances without one are left out of it). 0 = off. Training only: model files are unchanged.
    speaker_adversarial_weight: float = 0.0


@dataclass
class DataConfig:
    train_manifest: str = ""  # JSONL; several joined by commas are read as one (e.g. another corpus's speakers)
    dev_manifest: str = ""
    test_manifest: str = ""
    max_frames_per_batch: int = 20000  # total padded 10 ms frames per batch (length-bucketed)
    max_batch_size: int = 128
    max_duration: float = 30.0  # longer training utterances are skipped (reported)
    num_workers: int = 0  # audio reading is cheap; on 2 cores extra processes steal from the model
    speed_perturb: list = field(default_factory=list)  # training speed factors, e.g. [0.9, 1.0, 1.1] (Kaldi-style)
    noise_snr: list = field(default_factory=list)  # [min, max] dB: add white noise at a random SNR in training
    vtlp: list = field(default_factory=list)  # [min, max] frequency-warp factor per training utterance (VTLP)
    reverb_rt60: list = field(default_factory=list)  # [min, max] s: reverberate in a simulated room (RT60) ...
    reverb_prob: float = 0.5  # ... this share of the training utterances


@dataclass
class TrainConfig:
    out_dir: str = "exp/run"
    seed: int = 0
    max_epochs: int = 30
    max_minutes: float = 0.0  # wall-clock budget for fit(); 0 = none
    peak_lr: float = 1e-3
    warmup_steps: int = 800
    lr_schedule: str = "noam"  # after warmup: "noam" (inverse sqrt) | "budget" (linear to 0 when the budget ends)
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    accelerator: str = "auto"
    devices: Any = "auto"  # e.g. 4 GPUs; with num_nodes for multi-node
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning strategy: "ddp" (multi-GPU / multi-node), "ddp_spawn", ...
    precision: str = "32-true"  # "bf16-mixed" on GPUs (on CPUs bf16 matmuls are emulated and slow)
    num_threads: int = 0  # torch CPU threads; 0 = leave torch's default
    checkpoint_every_n_steps: int = 200  # also save last.ckpt mid-epoch, so --resume loses little work
    average_checkpoints: int = 5  # average the weights of N checkpoints into the model file (0/1 = off) ...
    average_by: str = "best"  # ... the N best by validation WER, or the "last" N epochs
    # > 0: keep an exponential moving average of the weights (e.g. 0.999, updated every step); validation and the
    # model file use it, training goes on from the raw weights. 0 = off.
    ema_decay: float = 0.0
    attention_plots: int = 3  # cross-attention maps of this many dev utterances, saved each epoch (0 = off)
    log_every_n_steps: int = 20
    logger: str = "csv"  # csv | tensorboard
    progress_bar: bool = True
    # Fine-tuning: start from this model file's weights and vocabulary (same model and feature sizes); CMVN is
    # recomputed on the new training data. "" = random initialisation.
    init_from: str = ""


@dataclass
class DecodeConfig:
    beam_size: int = 5
    length_penalty: float = 1.0  # score / length**length_penalty
    max_len_ratio: float = 1.0  # max output tokens = ratio * encoder frames (at least 2)
    ctc_weight: float = 0.3  # joint CTC/attention beam search (used when the model was trained with CTC)
    lm_weight: float = 0.0  # shallow fusion weight of an attached LM (asr.lm) when none is given with it
    batch_size: int = 32
    # The default decoder (asr/decoding/options.py): greedy, beam, ctc, nat-length, nat-max, mask-ctc, or a setup
    # such as "mask-ctc:iterations=5"; "" (older model files) is beam.
    decoder: str = "beam"
    # Test-time VTLN: attention search (greedy or beam) runs once per frequency-warp factor (the training VTLP warp)
    # and each utterance keeps the hypothesis the model scores highest, fitting the warp to an unseen vocal tract.
    # [] = off; [0.92, 0.96, 1.0, 1.04, 1.08] costs 5 searches.
    vtln_warps: list = field(default_factory=list)


@dataclass
class TokenizerConfig:
    """Output units and text normalisation (asr.text): built from the training transcripts, stored in the model."""

    kind: str = "char"  # char | bpe | unigram (SentencePiece, trained on the normalised training transcripts)
    vocab_size: int = 256  # bpe/unigram: pieces including the 5 special tokens; char: unused (set by the data)
    character_coverage: float = 1.0  # bpe/unigram: share of characters kept (0.9995 for Chinese/Japanese)
    normalizer: str = "default"  # asr.text.NORMALIZERS: default, english, librispeech, ljspeech, an4, digits, ...


@dataclass
class Config:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    specaug: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def to_dict(self) -> dict:
        return asdict(self)


class ConfigError(ValueError):
    pass


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check/convert a YAML or command-line value against the dataclass field type."""
    if typ is Any:
        return value
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(f)
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if typ is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return value
    if typ is str:
        if value is None:
            return ""
        return str(value)
    return value


def from_dict(cls, data: dict | None, where: str = "", strict: bool = True):
    """Build dataclass `cls` from a nested dict, rejecting unknown keys with their dotted path (or, with
    strict=False, dropping them: a model file written by another version of the toolkit still loads)."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in types_:
            if not strict:
                continue
            raise ConfigError(f"unknown config key '{path}' (known: {', '.join(types_)})")
        typ = types_[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value, path, strict)
        else:
            kwargs[key] = _coerce(value, typ, path)
    return cls(**kwargs)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings (value parsed as YAML: numbers, booleans, lists)."""
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        path, raw = item.split("=", 1)
        keys = path.strip().lstrip("-").split(".")
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise ConfigError(f"unknown config section '{path}'")
            node = node[k]
        if keys[-1] not in node:
            raise ConfigError(f"unknown config key '{path}'")
        node[keys[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return from_dict(Config, data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config and apply overrides. Relative paths in it are relative to the working directory."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
    cfg = from_dict(Config, data)
    return apply_overrides(cfg, overrides or [])


def config_from_dict(data: dict, strict: bool = True) -> Config:
    return from_dict(Config, data, strict=strict)
