"""What to decode with: one frozen `DecodingOptions`, built once, validated once (the way whisper's DecodingOptions is).

    DecodingOptions.from_config(cfg.decode)                   the model's own defaults
    build_options(base, {"beam_size": 10, ...}, spell=flag)   + what the user gave -> validated options
    parse_decoder("beam10:ctc_weight=0.5") -> DecoderSetup    a named setup, as `--decoder` and `asr benchmark` take it

A decoder is one of DECODERS: `greedy`, `beam`, `ctc`, `nat-length`, `nat-max`, `mask-ctc`. Each takes some of the
options; an option given for a decoder that does not take it is an error that names both (`--beam-size does not
apply to --decoder ctc`), never a silent choice. A setup is written `name[:key=value,...]`; `beam10` is `beam` with
beam_size 10, and a list value is written with slashes (`beam5:vtln_warps=0.92/1/1.08`).

This module itself imports no torch: the options are plain values.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

VTLN_RANGE = (0.67, 1.5)  # warp factors: a vocal tract at most ~1.5x longer or shorter


class OptionsError(ValueError):
    """Contradictory or invalid decoding options; the message names the options (as flags or keywords)."""


@dataclass(frozen=True)
class Decoder:
    """One way of turning the encoder output into text, and the options it takes."""

    name: str
    takes: tuple[str, ...]
    help: str
    size_option: str | None = None  # `name` + digits (beam10) sets this option (beam_size=10)


_BEAM = ("beam_size", "ctc_weight", "lm_weight", "length_penalty", "max_len_ratio", "vtln_warps", "nbest")
DECODERS: dict[str, Decoder] = {
    d.name: d
    for d in (
        Decoder("greedy", ("max_len_ratio", "vtln_warps"), "attention decoder, greedy"),
        Decoder(
            "beam",
            _BEAM,
            "beam search of width N (beam10): attention decoder scored jointly with CTC prefix scores (ctc_weight, "
            "when the model has a trained CTC head) and an attached LM (lm_weight); vtln_warps=0.92/0.96/1/1.04/1.08: "
            "test-time VTLN (one search per warp, each utterance's best kept)",
            size_option="beam_size",
        ),
        Decoder("ctc", (), "CTC best path (greedy) on the CTC head; gives token times"),
        Decoder(
            "nat-length",
            ("length_from",),
            "non-autoregressive, one pass; length from the length classifier (length_from=ctc: from the CTC best path)",
        ),
        Decoder("nat-max", ("max_len_ratio",), "non-autoregressive, one pass over the maximum length; ends at <eos>"),
        Decoder(
            "mask-ctc",
            ("threshold", "iterations"),
            "Mask-CTC: CTC draft, low-confidence tokens re-predicted in parallel passes; gives token times",
        ),
    )
}


@dataclass(frozen=True)
class DecodingOptions:
    """Everything that decides what text comes out. Scores are log-probabilities under the decoder's own scoring:
    attention (greedy), (1 - ctc_weight) attention + ctc_weight CTC prefix + lm_weight LM (beam), the CTC best path
    (ctc), the NAT head (nat-length, nat-max, mask-ctc)."""

    decoder: str = "beam"
    beam_size: int = 5
    ctc_weight: float = 0.3  # used when the model has a trained CTC head
    lm_weight: float = 0.0  # shallow fusion weight of an attached LM (asr.lm)
    length_penalty: float = 1.0  # the beam ranks by score / (tokens + 1) ** length_penalty
    max_len_ratio: float = 1.0  # at most this many tokens (<eos> included) per encoder frame, at least 2
    vtln_warps: tuple[float, ...] = ()  # test-time VTLN: one search per warp, each utterance's best kept; () = off
    nbest: int = 1  # hypotheses per utterance (beam): the best, then `Hypothesis.alternatives`
    length_from: str = "classifier"  # nat-length: "classifier" or "ctc"
    threshold: float = 0.99  # mask-ctc: CTC tokens less confident than this are re-predicted
    iterations: int = 3  # mask-ctc: parallel refinement passes

    def __post_init__(self) -> None:
        object.__setattr__(self, "vtln_warps", tuple(float(a) for a in self.vtln_warps))
        problems = _range_problems(self)
        if problems:
            raise OptionsError("; ".join(problems))

    @classmethod
    def from_config(cls, decode: Any) -> "DecodingOptions":
        """A model's `decode` config section (asr.config.DecodeConfig) -> its default options. Its `decoder` may be a
        setup (`mask-ctc:iterations=5`); "" (older model files) is beam search."""
        values = {f.name: getattr(decode, f.name) for f in fields(cls) if hasattr(decode, f.name)}
        spec = values.pop("decoder", "") or "beam"
        setup = parse_decoder(spec)
        return cls(**{**values, **setup.options(), "decoder": setup.kind})

    @property
    def warps(self) -> tuple[float, ...]:
        """The feature warps the encoder runs at: (1.0,) without VTLN."""
        return self.vtln_warps or (1.0,)

    def describe(self) -> str:
        """One line for reports: the decoder and the options it uses."""
        d = DECODERS[self.decoder]
        used = {k: getattr(self, k) for k in d.takes}
        if self.decoder == "beam":
            used = {k: v for k, v in used.items() if k not in ("vtln_warps", "nbest") or v not in ((), 1)}
        elif "vtln_warps" in used and not used["vtln_warps"]:
            del used["vtln_warps"]
        return self.decoder + "".join(f", {k} {_fmt(v)}" for k, v in used.items())

    def slug(self) -> str:
        """A short file-name-safe label: the decoder (with its beam size) and the options that differ from the
        defaults of this class, e.g. "beam10", "beam5_lm_weight0.3", "mask-ctc_iterations5"."""
        name = f"beam{self.beam_size}" if self.decoder == "beam" else self.decoder
        default = DecodingOptions(decoder=self.decoder)
        takes = DECODERS[self.decoder].takes
        changed = [k for k in takes if k != "beam_size" and getattr(self, k) != getattr(default, k)]
        return re.sub(r"[^\w.-]+", "_", name + "".join(f"_{k}{_fmt(getattr(self, k))}" for k in changed))


def _range_problems(o: DecodingOptions) -> list[str]:
    p = []
    if o.decoder not in DECODERS:
        p.append(f"unknown decoder {o.decoder!r} (known: {known_decoders()})")
    if not (isinstance(o.beam_size, int) and o.beam_size >= 1):
        p.append(f"beam_size must be an integer >= 1, got {o.beam_size!r}")
    if not 0.0 <= o.ctc_weight <= 1.0:
        p.append(f"ctc_weight must be in [0, 1], got {o.ctc_weight}")
    if not o.lm_weight >= 0.0:  # the beam's stopping rule relies on scores only falling as hypotheses grow
        p.append(f"lm_weight must be >= 0, got {o.lm_weight}")
    if not o.max_len_ratio > 0:
        p.append(f"max_len_ratio must be > 0, got {o.max_len_ratio}")
    bad = [a for a in o.vtln_warps if not VTLN_RANGE[0] <= a <= VTLN_RANGE[1]]
    if bad:
        p.append(f"vtln_warps must be warp factors in [{VTLN_RANGE[0]}, {VTLN_RANGE[1]}] (e.g. 0.92,1,1.08), got {bad}")
    if not (isinstance(o.nbest, int) and o.nbest >= 1):
        p.append(f"nbest must be an integer >= 1, got {o.nbest!r}")
    elif o.decoder == "beam" and o.nbest > o.beam_size:
        p.append(f"nbest {o.nbest} needs a beam at least as wide (beam_size {o.beam_size})")
    if o.length_from not in ("classifier", "ctc"):
        p.append(f"length_from must be classifier or ctc, got {o.length_from!r}")
    if not 0.0 <= o.threshold <= 1.0:
        p.append(f"threshold must be in [0, 1], got {o.threshold}")
    if not (isinstance(o.iterations, int) and o.iterations >= 1):
        p.append(f"iterations must be an integer >= 1, got {o.iterations!r}")
    return p


OPTION_TYPES: dict[str, type] = {f.name: f.type for f in fields(DecodingOptions)}  # as strings (future annotations)
_CONVERT: dict[str, Callable[[str], Any]] = {
    "beam_size": int,
    "nbest": int,
    "iterations": int,
    "length_from": str,
    "vtln_warps": lambda v: tuple(float(x) for x in v.split("/")),  # commas separate parameters
}


def keyword(name: str) -> str:
    """How the Python API spells an option in messages."""
    return f"{name}="


def flag(name: str) -> str:
    """How the command line spells an option in messages."""
    return "--" + name.replace("_", "-")


def build_options(
    base: DecodingOptions, given: Mapping[str, Any], spell: Callable[[str], str] = keyword, base_name: str = ""
) -> tuple[DecodingOptions, set[str]]:
    """`base` (the model's defaults) + the options the user `given` (None = not given) -> (options, the names set
    explicitly). `given["decoder"]` may be a setup (`beam10:ctc_weight=0.5`); what it sets counts as given.

    Contradictions are errors that name both sides: an option for a decoder that does not take it, or a setup and a
    separate option that set the same thing differently. `base_name` says where the base decoder came from."""
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(k for k in given if k not in OPTION_TYPES)
    if unknown:
        raise OptionsError(f"unknown decoding option(s) {', '.join(unknown)} (known: {', '.join(OPTION_TYPES)})")
    explicit = dict(given)
    kind = base.decoder
    where = f"decoder {kind}" + (f" ({base_name})" if base_name else "")
    if "decoder" in given:
        setup = given["decoder"] if isinstance(given["decoder"], DecoderSetup) else parse_decoder(given["decoder"])
        for key, value in setup.options().items():
            if key in given and _differs(given[key], value):
                raise OptionsError(
                    f"{spell('decoder')} {setup.canonical} sets {key} = {_fmt(value)}, but {spell(key)} "
                    f"{_fmt(given[key])} was given too: give it once"
                )
            explicit[key] = value
        kind = explicit["decoder"] = setup.kind
        where = f"{spell('decoder')} {setup.canonical}"
    takes = DECODERS[kind].takes
    wrong = [k for k in explicit if k != "decoder" and k not in takes]
    if wrong:
        names = ", ".join(spell(k) for k in wrong)
        verb = "does" if len(wrong) == 1 else "do"
        raise OptionsError(f"{names} {verb} not apply to {where} (it takes: {', '.join(takes) or 'none'})")
    return dataclasses.replace(base, **explicit), set(explicit)


def options_for_model(
    options: DecodingOptions | None,
    default: Any,
    given: Mapping[str, Any],
    spell: Callable[[str], str],
    has_ctc: bool,
    no_lm: str = "",
) -> DecodingOptions:
    """What Recognizer.options and the ONNX Runtime.options share: `options` (None: `default`, the model's decode
    config) + `given` -> options checked against the model's heads. A CTC weight for a model without a CTC head, or
    an LM weight where there is no LM (`no_lm` says why, e.g. "needs a language model (attach one: --lm)"), falls to
    0 when it came from the defaults and is an error when given. The caller then checks the heads (check_heads)."""
    base_name = "" if options is not None else "the model's decode.decoder"
    base = options if options is not None else DecodingOptions.from_config(default)
    opts, explicit = build_options(base, given, spell, base_name)
    if opts.decoder == "beam" and opts.ctc_weight > 0 and not has_ctc:
        if "ctc_weight" in explicit:
            raise OptionsError(f"{spell('ctc_weight')} {opts.ctc_weight:g}: this model's CTC head was never trained")
        opts = dataclasses.replace(opts, ctc_weight=0.0)
    if opts.decoder == "beam" and opts.lm_weight > 0 and no_lm:
        if "lm_weight" in explicit:
            raise OptionsError(f"{spell('lm_weight')} {opts.lm_weight:g} {no_lm}")
        opts = dataclasses.replace(opts, lm_weight=0.0)
    return opts


def check_heads(options: DecodingOptions, has_ctc: bool, has_nat: bool) -> None:
    """Raise OptionsError if `options` need a head (CTC, the non-autoregressive one) the model never trained."""
    d = options.decoder
    needs_ctc = d in ("ctc", "mask-ctc") or (d == "nat-length" and options.length_from == "ctc")
    if needs_ctc and not has_ctc:
        raise OptionsError(f"decoder {d}: this model's CTC head was never trained (loss.ctc_weight = 0)")
    if (d.startswith("nat-") or d == "mask-ctc") and not has_nat:
        raise OptionsError(
            f"decoder {d}: this model has no trained non-autoregressive head "
            "(model.nat_decoder_layers, loss.nat_weight)"
        )


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return tuple(float(x) for x in a) != tuple(float(x) for x in b)
    return a != b


def _fmt(v: Any) -> str:
    if isinstance(v, (tuple, list)):  # a list option: vtln_warps=0.96/1.0/1.04
        return "/".join(_fmt(x) for x in v)
    return repr(v) if isinstance(v, float) else str(v)


# --- named setups: `beam10:ctc_weight=0.5` ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderSetup:
    """A decoder named the way `--decoder` and `asr benchmark --decoders` take it."""

    name: str  # as the user names it: "beam10"
    kind: str  # a key of DECODERS: "beam"
    params: tuple[tuple[str, Any], ...] = field(default_factory=tuple)  # sorted; excludes the size option

    @property
    def canonical(self) -> str:
        """One spelling per setup (sorted parameters, exact float repr): the cache key and the label in reports."""
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in self.params)

    def options(self) -> dict[str, Any]:
        """The options this setup sets, the size option (beam10 -> beam_size 10) included."""
        d = DECODERS[self.kind]
        out = dict(self.params)
        suffix = self.name[len(d.name) :]
        if d.size_option and suffix:
            out[d.size_option] = int(suffix)
        return out


def known_decoders() -> str:
    return ", ".join(d.name + ("N" if d.size_option else "") for d in DECODERS.values())


def _convert(setup: str, key: str, value: str) -> Any:
    try:
        convert = _CONVERT.get(key, float)
        return convert(value)
    except ValueError:
        what = "list of numbers separated by '/'" if key == "vtln_warps" else OPTION_TYPES[key]
        raise OptionsError(f"decoder {setup!r}: {key}={value!r} is not a valid {what}") from None


def parse_decoder(text: str) -> DecoderSetup:
    """`beam10:ctc_weight=0.5,length_penalty=0.8` -> DecoderSetup; unknown names and parameters are errors."""
    name, _, rest = text.strip().partition(":")
    d = DECODERS.get(name)
    if d is None:  # `beam` alone is allowed too: the model's configured beam size
        m = re.fullmatch(r"(.+?)(\d+)", name)
        family = DECODERS.get(m.group(1)) if m else None
        if family is not None and family.size_option:
            d = family
            if int(m.group(2)) < 1:
                raise OptionsError(f"decoder {name!r}: {family.size_option} must be at least 1")
    if d is None:
        raise OptionsError(f"unknown decoder {name!r} (known: {known_decoders()})")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise OptionsError(f"decoder {text!r}: parameter {item!r} is not key=value")
        if key not in d.takes or key == d.size_option:
            takes = ", ".join(k for k in d.takes if k != d.size_option) or "none"
            raise OptionsError(f"decoder {text!r}: unknown parameter {key!r} (takes: {takes})")
        params[key] = _convert(text, key, value)
    setup = DecoderSetup(name, d.name, tuple(sorted(params.items())))
    DecodingOptions(**{**setup.options(), "decoder": d.name})  # range errors now, e.g. beam2:nbest=3
    return setup


def parse_decoders(items: Sequence[str]) -> list[DecoderSetup]:
    """Command-line decoder lists: each item may hold several setups separated by commas; a comma-separated
    `key=value` belongs to the setup before it (`beam10:ctc_weight=0.5,length_penalty=0.8,ctc` is two setups).
    Duplicates (same canonical spelling) are dropped."""
    specs: list[str] = []
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            if "=" in part and ":" not in part:
                if not specs:
                    raise OptionsError(f"decoder parameter {part!r} comes before any decoder name")
                specs[-1] += ("," if ":" in specs[-1] else ":") + part
            else:
                specs.append(part)
    if not specs:
        raise OptionsError("no decoders given")
    out: dict[str, DecoderSetup] = {}
    for spec in specs:
        setup = parse_decoder(spec)
        out.setdefault(setup.canonical, setup)
    return list(out.values())
