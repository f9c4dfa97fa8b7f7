"""Text: normalisation and tokenizers (text <-> token ids).

    normalize_text("Call Mom, NOW!") -> "call mom now"                 (the "default" normaliser)
    get_normalizer("english")("On the 21st, 3 of us") -> "on the twenty first three of us"
    tok = build_tokenizer(TokenizerConfig(kind="bpe", vocab_size=64), train_texts)
    tok.encode("call") -> [ids...]; tok.decode(ids) -> "call"; tokenizer_from_dict(tok.to_dict()) -> same tokenizer

Every tokenizer has the same layout: the special tokens come first, <blank> (CTC) 0, <pad> 1, <sos> 2, <eos> 3
(the stop token), <unk> 4, so the model, CTC and the decoders never depend on the kind. A tokenizer carries its
normaliser: `encode` normalises first, and scoring applies the same normaliser to references and hypotheses.
sentencepiece is imported only by SentencePieceTokenizer: the torch-free runtime decodes with `Tokenizer` itself.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import string
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from asr.numbers import expand_numbers, spell_digits

if TYPE_CHECKING:
    from asr.config import TokenizerConfig

log = logging.getLogger("asr")

BLANK, PAD, SOS, EOS, UNK = "<blank>", "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = [BLANK, PAD, SOS, EOS, UNK]
LATIN = " '" + string.ascii_lowercase  # always in a vocabulary, so an unseen English letter is never <unk>

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
_DASHES = re.compile(r"[-\u2010-\u2015_/]")
_DROP = re.compile(r"[^\w' ]")  # keeps letters and digits of any script, apostrophes, spaces
_SPACES = re.compile(r"\s+")
_DIGIT = re.compile(r"\d")


def normalize_text(text: str) -> str:
    """Lower-case, unify apostrophes, dashes to spaces, drop other punctuation, squeeze whitespace."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = _DASHES.sub(" ", text)
    text = _DROP.sub("", _SPACES.sub(" ", text))
    text = re.sub(r"(^|\s)'+|'+(\s|$)", r"\1\2", text)  # quotes around words, not contractions
    return _SPACES.sub(" ", text).strip()


# ----------------------------------------------------------------------------------------------- normalisers


def fold_accents(text: str) -> str:
    """ "café naïve" -> "cafe naive": drop combining marks (for English corpora with a few borrowed words)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@dataclass(frozen=True)
class Normalizer:
    """A named text normalisation: `normalizer(text) -> text`, applied to training transcripts, and to references
    and hypotheses alike before scoring. Always ends in `normalize_text`, and is idempotent."""

    name: str
    description: str  # what it does, in words (printed by `asr evaluate`)
    numbers: str = "keep"  # keep: digits stay digits | words: read as English numbers | digits: one word per digit
    fold_accents: bool = False
    replacements: tuple[tuple[str, str], ...] = ()  # (regex, replacement), case-insensitive, applied first

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text)
        for pattern, repl in self.replacements:
            text = re.sub(pattern, repl, text, flags=re.IGNORECASE)
        if self.numbers == "words":
            text = expand_numbers(text)
        elif self.numbers == "digits":
            text = _DIGIT.sub(lambda m: spell_digits(m.group()), text)
        if self.fold_accents:
            text = fold_accents(text)
        return normalize_text(text)


_BASE = "lower case, apostrophes kept, dashes to spaces, other punctuation dropped"
_NUMBERS = "numbers in digits read as English words (cardinals, ordinals, years, decimals, money, percent, times)"
# Abbreviations LJSpeech's normalised column still writes (its speaker reads them in full). Only unambiguous ones:
# "St." (saint or street) and "Co." are left alone. Manifests may have lost the period already, so it is optional.
_LJ_ABBREVIATIONS = tuple(
    (rf"\b{abbr}\b\.?", full)
    for abbr, full in (
        ("mrs", "missus"),
        ("mr", "mister"),
        ("messrs", "messieurs"),
        ("drs", "doctors"),
        ("dr", "doctor"),
        ("jr", "junior"),
        ("esq", "esquire"),
        ("capt", "captain"),
        ("sgt", "sergeant"),
        ("ltd", "limited"),
    )
)

NORMALIZERS: dict[str, Normalizer] = {
    n.name: n
    for n in [
        Normalizer("default", f"{_BASE}; letters of any script and digits kept as written"),
        Normalizer("english", f"{_BASE}; {_NUMBERS}", numbers="words"),
        Normalizer("librispeech", f"{_BASE}; {_NUMBERS} (LibriSpeech spells numbers out)", numbers="words"),
        Normalizer("an4", f"{_BASE}; {_NUMBERS} (AN4 writes words and spelled letters)", numbers="words"),
        Normalizer(
            "ljspeech",
            f"{_BASE}; {_NUMBERS}; Mr/Mrs/Dr/... spelled out; accents removed",
            numbers="words",
            fold_accents=True,
            replacements=_LJ_ABBREVIATIONS,
        ),
        Normalizer(
            "commonvoice",
            f"{_BASE}; letters of any script kept, numbers kept as written (any language); "
            "modifier-letter apostrophes unified",
            replacements=(("\u02bc", "'"),),
        ),
        Normalizer("digits", f'{_BASE}; every digit read as its own word ("42" -> "four two")', numbers="digits"),
    ]
}


def get_normalizer(normalizer: str | Normalizer | None = "default") -> Normalizer:
    """A normaliser by name (`NORMALIZERS`); a `Normalizer` is returned as is, None means "default"."""
    if isinstance(normalizer, Normalizer):
        return normalizer
    try:
        return NORMALIZERS[normalizer or "default"]
    except KeyError:
        raise ValueError(f"unknown text normaliser {normalizer!r} (known: {', '.join(NORMALIZERS)})") from None


# ----------------------------------------------------------------------------------------------- tokenizers


class Tokenizer:
    """What every tokenizer shares: the special ids, the normaliser, and decoding up to <eos>."""

    kind = ""
    tokens: list[str]

    def __init__(self, tokens: Sequence[str], normalizer: str | Normalizer = "default"):
        if list(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"tokenizer vocabulary does not start with the special tokens {SPECIALS}")
        self.tokens = list(tokens)
        self.normalizer = get_normalizer(normalizer)
        self.blank, self.pad, self.sos, self.eos, self.unk = range(len(SPECIALS))

    def __len__(self) -> int:
        return len(self.tokens)

    def content_ids(self, ids: Iterable[int]) -> list[int]:
        """The ids up to the first <eos>, without specials or out-of-vocabulary ids."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if len(SPECIALS) <= i < len(self.tokens):
                out.append(i)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text; stops at <eos>, drops other specials."""
        return _SPACES.sub(" ", self._join(self.content_ids(ids))).strip()

    def words(self, ids: Sequence[int]) -> list[tuple[str, int, int]]:
        """The words of a token sequence: (text, first, last + 1) with indexes into `ids` (to look up token times).
        A word starts after a space token (characters) or at a piece that starts with SentencePiece's "▁"."""
        out: list[tuple[str, int, int]] = []
        current: list[int] = []  # indexes of the current word's tokens

        def flush() -> None:
            text = self._join([int(ids[i]) for i in current]).strip()
            if text:
                out.append((text, current[0], current[-1] + 1))
            current.clear()

        for i, t in enumerate(ids):
            t = int(t)
            if t == self.eos:
                break
            if not len(SPECIALS) <= t < len(self.tokens):
                continue
            piece = self.tokens[t]
            if piece.isspace() or piece.startswith("▁"):
                flush()
            if piece.strip().strip("▁"):
                current.append(i)
        flush()
        return out

    def _join(self, ids: list[int]) -> str:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens), "normalizer": self.normalizer.name}


class CharTokenizer(Tokenizer):
    """Characters (space, apostrophe, a-z, plus any other character seen in training text) + specials."""

    kind = "char"

    def __init__(self, chars: Sequence[str], normalizer: str | Normalizer = "default"):
        super().__init__(SPECIALS + [c for c in chars if c not in SPECIALS], normalizer)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], normalizer: str | Normalizer = "default") -> "CharTokenizer":
        norm = get_normalizer(normalizer)
        chars = set(LATIN)
        for t in texts:
            chars.update(norm(t))
        return cls(sorted(chars), norm)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, self.unk) for c in self.normalizer(text)]

    def _join(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids)


SENTENCEPIECE_KINDS = ("bpe", "unigram")


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece BPE or unigram pieces, trained in-process on normalised training transcripts.

    SentencePiece's own special ids are configured to ours (pad 1, bos = <sos> 2, eos 3, unk 4, <blank> a control
    symbol at 0), so its ids are the model's ids with no mapping. Its internal normalisation is off ("identity"):
    the text is already normalised by our normaliser, and decode(encode(text)) must give that text back."""

    def __init__(self, kind: str, model_proto: bytes, normalizer: str | Normalizer = "default"):
        if kind not in SENTENCEPIECE_KINDS:
            raise ValueError(f"unknown SentencePiece kind {kind!r} (known: {', '.join(SENTENCEPIECE_KINDS)})")
        import sentencepiece as spm

        self.kind, self.model_proto = kind, bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        super().__init__([self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())], normalizer)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        kind: str = "bpe",
        vocab_size: int = 256,
        character_coverage: float = 1.0,
        normalizer: str | Normalizer = "default",
        seed: int = 0,
    ) -> "SentencePieceTokenizer":
        """Train on `texts` (normalised here first). `vocab_size` counts the five special tokens."""
        import sentencepiece as spm

        norm = get_normalizer(normalizer)
        buf = io.BytesIO()
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(s for s in map(norm, texts) if s),
                model_writer=buf,
                model_type=kind,
                vocab_size=vocab_size,
                character_coverage=character_coverage,
                required_chars=LATIN.strip(),
                split_digits=True,  # no number is memorised as one piece
                normalization_rule_name="identity",
                control_symbols=[BLANK],
                pad_id=1,
                pad_piece=PAD,
                bos_id=2,
                bos_piece=SOS,
                eos_id=3,
                eos_piece=EOS,
                unk_id=4,
                unk_piece=UNK,
                num_threads=1,  # deterministic, and training on transcripts takes seconds anyway
                minloglevel=2,  # no log spam
            )
        except RuntimeError as e:  # "... Vocabulary size too high (300). Please set it to a value <= 212."
            reason = str(e).split("] ", 1)[-1]
            what = f"a {kind} tokenizer with tokenizer.vocab_size={vocab_size}"
            raise ValueError(f"cannot train {what}: {reason}") from None
        return cls(kind, buf.getvalue(), norm)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(self.normalizer(text), out_type=int)

    def _join(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def to_dict(self) -> dict:
        # The model proto as base64 text: a str loads with torch.load(weights_only=True) and keeps the file JSON-able.
        return {**super().to_dict(), "model": base64.b64encode(self.model_proto).decode("ascii")}


def build_tokenizer(cfg: "TokenizerConfig", texts: Iterable[str]) -> Tokenizer:
    """The tokenizer the config asks for, built from the training transcripts (`texts`, raw or normalised)."""
    if cfg.kind == "char":
        tok: Tokenizer = CharTokenizer.build(texts, cfg.normalizer)
    elif cfg.kind in SENTENCEPIECE_KINDS:
        tok = SentencePieceTokenizer.train(texts, cfg.kind, cfg.vocab_size, cfg.character_coverage, cfg.normalizer)
    else:
        raise ValueError(f"tokenizer.kind must be one of char, {', '.join(SENTENCEPIECE_KINDS)}; got {cfg.kind!r}")
    log.info("tokenizer: %s, %d tokens, text normaliser %s", tok.kind, len(tok), tok.normalizer.name)
    return tok


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from `to_dict()` (a model file's "tokenizer"); older files have no normaliser: default."""
    kind, normalizer = d.get("kind"), d.get("normalizer", "default")
    tokens = d["tokens"]
    if tokens[: len(SPECIALS)] != SPECIALS:
        raise ValueError("tokenizer vocabulary does not start with the special tokens")
    if kind == "char":
        return CharTokenizer(tokens[len(SPECIALS) :], normalizer)
    if kind in SENTENCEPIECE_KINDS:
        tok = SentencePieceTokenizer(kind, base64.b64decode(d["model"]), normalizer)
        if tok.tokens != tokens:
            raise ValueError("tokenizer: the stored SentencePiece model does not match the stored vocabulary")
        return tok
    raise ValueError(f"unknown tokenizer kind {kind!r}")
