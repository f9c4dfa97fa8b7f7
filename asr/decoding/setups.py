"""Named decoding setups for benchmarking: a small registry, one entry per way of turning audio into text.

    parse_decoders(["greedy,beam10:ctc_weight=0.5,length_penalty=0.8", "ctc"]) -> [DecoderSetup, ...]
    setup.check(recognizer)                    # raises ValueError before any decoding if the model can't do it
    setup.run(recognizer, wavs (batch, samples), lengths) -> list[str]

A setup is written `name[:key=value,...]`. `greedy` is attention greedy search, `beamN` beam search of width N (joint
CTC/attention with the model's CTC weight when it has a trained CTC head), `ctc` CTC best path on the CTC head.
A list value is written with slashes: `beam5:vtln_warps=0.92/0.96/1/1.04/1.08` (test-time VTLN).
A new decoder (e.g. non-autoregressive `nat-length`) plugs in with one `register(DecoderKind(...))`: its run
function takes (recognizer, padded wavs, lengths, params) and returns one text per row.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:  # the registry itself stays importable without torch (the CLI help lists it)
    from torch import Tensor

    from asr.recognizer import Recognizer

Runner = Callable[["Recognizer", "Tensor", "Tensor", dict], list]


@dataclass(frozen=True)
class DecoderKind:
    name: str
    run: Runner
    params: dict[str, type]  # the parameters a setup may set, with their types
    help: str
    size_param: str | None = None  # `name` + digits (beam10) sets this parameter (beam_size=10)
    check: Callable[["Recognizer", dict], None] | None = None  # raise ValueError if this model can't run it


DECODERS: dict[str, DecoderKind] = {}


def register(kind: DecoderKind) -> DecoderKind:
    DECODERS[kind.name] = kind
    return kind


@dataclass(frozen=True)
class DecoderSetup:
    name: str  # as the user names it: "beam10"
    kind: str  # registry key: "beam"
    params: tuple[tuple[str, Any], ...] = field(default_factory=tuple)  # sorted; excludes the size parameter

    @property
    def canonical(self) -> str:
        """One spelling per setup (sorted parameters, exact float repr): the cache key and the label in reports."""
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in self.params)

    def all_params(self) -> dict[str, Any]:
        kind = DECODERS[self.kind]
        out = dict(self.params)
        suffix = self.name[len(kind.name) :]
        if kind.size_param and suffix:
            out[kind.size_param] = int(suffix)
        return out

    def check(self, recognizer: "Recognizer") -> None:
        kind = DECODERS[self.kind]
        try:
            if kind.check is not None:
                kind.check(recognizer, self.all_params())
        except ValueError as e:
            raise ValueError(f"decoder {self.canonical}: {e}") from None

    def run(self, recognizer: "Recognizer", wavs: "Tensor", lengths: "Tensor") -> list[str]:
        return DECODERS[self.kind].run(recognizer, wavs, lengths, self.all_params())


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):  # a list parameter: vtln_warps=0.96/1.0/1.04
        return "/".join(_fmt(x) for x in v)
    return repr(v) if isinstance(v, float) else str(v)


def _known() -> str:
    return ", ".join(k.name + ("N" if k.size_param else "") for k in DECODERS.values())


def _convert(setup: str, key: str, value: str, typ: type) -> Any:
    try:
        if typ is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if typ is tuple:  # floats separated by "/" (commas separate parameters)
            return tuple(float(x) for x in value.split("/"))
        return typ(value)
    except ValueError:
        what = "list of numbers separated by '/'" if typ is tuple else typ.__name__
        raise ValueError(f"decoder {setup!r}: {key}={value!r} is not a valid {what}") from None


def parse_decoder(text: str) -> DecoderSetup:
    """`beam10:ctc_weight=0.5,length_penalty=0.8` -> DecoderSetup; unknown names and parameters are errors."""
    name, _, rest = text.strip().partition(":")
    kind = DECODERS.get(name)
    if kind is None or kind.size_param:  # `beam` alone is allowed too: the model's configured beam size
        m = re.fullmatch(r"(.+?)(\d+)", name)
        family = DECODERS.get(m.group(1)) if m else None
        if family is not None and family.size_param:
            kind = family
            if int(m.group(2)) < 1:
                raise ValueError(f"decoder {name!r}: {family.size_param} must be at least 1")
    if kind is None:
        raise ValueError(f"unknown decoder {name!r} (known: {_known()})")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise ValueError(f"decoder {text!r}: parameter {item!r} is not key=value")
        if key not in kind.params or key == kind.size_param:
            takes = ", ".join(k for k in kind.params if k != kind.size_param) or "none"
            raise ValueError(f"decoder {text!r}: unknown parameter {key!r} (takes: {takes})")
        params[key] = _convert(text, key, value, kind.params[key])
    return DecoderSetup(name, kind.name, tuple(sorted(params.items())))


def parse_decoders(items: Sequence[str]) -> list[DecoderSetup]:
    """Command-line decoder lists: each item may hold several setups separated by commas; a comma-separated
    `key=value` belongs to the setup before it (`beam10:ctc_weight=0.5,length_penalty=0.8,ctc` is two setups).
    Duplicates (same canonical spelling) are dropped."""
    specs: list[str] = []
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            if "=" in part and ":" not in part:
                if not specs:
                    raise ValueError(f"decoder parameter {part!r} comes before any decoder name")
                specs[-1] += ("," if ":" in specs[-1] else ":") + part
            else:
                specs.append(part)
    if not specs:
        raise ValueError("no decoders given")
    out: dict[str, DecoderSetup] = {}
    for spec in specs:
        setup = parse_decoder(spec)
        out.setdefault(setup.canonical, setup)
    return list(out.values())


# --- the built-in setups -------------------------------------------------------------------------------------------


def _routes(recognizer: "Recognizer", params: dict) -> tuple[dict, dict, float | None]:
    """Split parameters into keyword arguments of `recognize`, temporary overrides of the model's decode config
    (length_penalty, max_len_ratio, ...) and the weight of the attached LM (lm_weight). A parameter the recognizer
    can't take (lm_weight without an attached LM) is an error naming it."""
    accepted = inspect.signature(recognizer.recognize).parameters
    decode_fields = {f.name for f in fields(recognizer.cfg.decode)}
    kwargs, overrides, lm_weight = {}, {}, None
    for key, value in params.items():
        if key == "lm_weight" and "lm_weight" not in accepted and hasattr(recognizer, "fusion"):
            if recognizer.fusion is None:  # the weight of nothing would silently decode without an LM
                raise ValueError("lm_weight needs a language model attached (asr benchmark --lm FILE)")
            lm_weight = value
        elif key in accepted:
            kwargs[key] = value
        elif key in decode_fields:
            overrides[key] = value
        else:
            raise ValueError(f"parameter {key!r} is not supported by this recognizer")
    return kwargs, overrides, lm_weight


@contextlib.contextmanager
def _decode_settings(recognizer: "Recognizer", overrides: dict, lm_weight: float | None) -> Iterator[None]:
    """Set decode-config fields (and the attached LM's weight) for one call and restore them, even on error."""
    cfg = recognizer.cfg.decode
    saved = {k: getattr(cfg, k) for k in overrides}
    saved_lm = recognizer.fusion.weight if lm_weight is not None else None
    try:
        for k, v in overrides.items():
            setattr(cfg, k, v)
        if lm_weight is not None:
            recognizer.fusion.weight = lm_weight
        yield
    finally:
        for k, v in saved.items():
            setattr(cfg, k, v)
        if lm_weight is not None:
            recognizer.fusion.weight = saved_lm


def _check_routes(recognizer: "Recognizer", params: dict) -> None:
    _routes(recognizer, params)
    if "vtln_warps" in params:
        from asr.recognizer import check_warps

        check_warps(params["vtln_warps"])


def _run_attention(recognizer: "Recognizer", wavs: "Tensor", lengths: "Tensor", params: dict) -> list[str]:
    kwargs, overrides, lm_weight = _routes(recognizer, params)
    with _decode_settings(recognizer, overrides, lm_weight):
        return recognizer.recognize(wavs, lengths, **kwargs, decoder="")  # "": attention search itself


def _run_greedy(recognizer: "Recognizer", wavs: "Tensor", lengths: "Tensor", params: dict) -> list[str]:
    return _run_attention(recognizer, wavs, lengths, {**params, "beam_size": 1})


def _check_ctc(recognizer: "Recognizer", params: dict) -> None:
    if recognizer.cfg.loss.ctc_weight <= 0:
        raise ValueError("this model's CTC head was never trained (loss.ctc_weight = 0)")


def _run_ctc(recognizer: "Recognizer", wavs: "Tensor", lengths: "Tensor", params: dict) -> list[str]:
    import torch

    from asr.decoding.ctc import ctc_greedy

    with torch.no_grad():
        feats, feat_lengths = recognizer.features(wavs, lengths)
        memory, memory_lengths = recognizer.network.encoder(feats, feat_lengths)
        log_probs = recognizer.network.ctc(memory).log_softmax(-1)
        ids = ctc_greedy(log_probs, memory_lengths, recognizer.tokenizer.blank)
    return [recognizer.tokenizer.decode(seq) for seq in ids]


register(
    DecoderKind(
        "greedy",
        _run_greedy,
        {"max_len_ratio": float, "vtln_warps": tuple},
        "attention greedy search",
        check=_check_routes,
    )
)
register(
    DecoderKind(
        "beam",
        _run_attention,
        {
            "beam_size": int,
            "ctc_weight": float,
            "length_penalty": float,
            "max_len_ratio": float,
            "lm_weight": float,
            "vtln_warps": tuple,
        },
        "beam search of width N (beam10); joint CTC/attention with the model's CTC weight when it has a CTC head; "
        "vtln_warps=0.92/0.96/1/1.04/1.08: test-time VTLN (one search per warp, each utterance's best kept)",
        size_param="beam_size",
        check=_check_routes,
    )
)
register(DecoderKind("ctc", _run_ctc, {}, "CTC best path (greedy) on the CTC head", check=_check_ctc))


def _check_nat(recognizer: "Recognizer", params: dict) -> None:
    if recognizer.network.nat is None or recognizer.cfg.loss.nat_weight <= 0:
        raise ValueError(
            "this model has no trained non-autoregressive head (model.nat_decoder_layers, loss.nat_weight)"
        )
    if params.get("length_from", "classifier") not in ("classifier", "ctc"):
        raise ValueError("length_from must be classifier or ctc")


def _check_mask_ctc(recognizer: "Recognizer", params: dict) -> None:
    _check_nat(recognizer, {})
    _check_ctc(recognizer, params)


def _nat_runner(decode: Callable) -> Runner:
    def run(recognizer: "Recognizer", wavs: "Tensor", lengths: "Tensor", params: dict) -> list[str]:
        import torch

        with torch.no_grad():
            feats, feat_lengths = recognizer.features(wavs, lengths)
            memory, memory_lengths = recognizer.network.encoder(feats, feat_lengths)
            out = decode(recognizer, memory, memory_lengths, params)
        return [recognizer.tokenizer.decode(seq) for seq, _ in out]

    return run


def _nat_length(rec: "Recognizer", memory: "Tensor", lengths: "Tensor", params: dict) -> list:
    from asr.decoding.nat import nat_length

    return nat_length(rec.network, memory, lengths, rec.tokenizer, params.get("length_from", "classifier"))


def _nat_max(rec: "Recognizer", memory: "Tensor", lengths: "Tensor", params: dict) -> list:
    from asr.decoding.nat import nat_max

    return nat_max(
        rec.network, memory, lengths, rec.tokenizer, params.get("max_len_ratio", rec.cfg.decode.max_len_ratio)
    )


def _mask_ctc(rec: "Recognizer", memory: "Tensor", lengths: "Tensor", params: dict) -> list:
    from asr.decoding.nat import mask_ctc

    return mask_ctc(
        rec.network, memory, lengths, rec.tokenizer, params.get("threshold", 0.99), params.get("iterations", 3)
    )


register(
    DecoderKind(
        "nat-length",
        _nat_runner(_nat_length),
        {"length_from": str},
        "non-autoregressive, one pass; length from the length classifier (length_from=ctc: from the CTC best path)",
        check=_check_nat,
    )
)
register(
    DecoderKind(
        "nat-max",
        _nat_runner(_nat_max),
        {"max_len_ratio": float},
        "non-autoregressive, one pass over the maximum length; ends at the first <eos>",
        check=_check_nat,
    )
)
register(
    DecoderKind(
        "mask-ctc",
        _nat_runner(_mask_ctc),
        {"threshold": float, "iterations": int},
        "Mask-CTC: CTC draft, low-confidence tokens re-predicted in parallel passes",
        check=_check_mask_ctc,
    )
)
