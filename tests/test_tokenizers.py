"""Tokenizers (characters, SentencePiece BPE/unigram), named text normalisers and numbers read as words."""

import json
import random
from pathlib import Path

import pytest
import torch

from asr.config import ConfigError, TokenizerConfig, load_config
from asr.metrics import error_rates
from asr.numbers import cardinal, expand_numbers, ordinal, year
from asr.text import (
    NORMALIZERS,
    SPECIALS,
    CharTokenizer,
    SentencePieceTokenizer,
    build_tokenizer,
    get_normalizer,
    tokenizer_from_dict,
)

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "turn on the kitchen lights please set a timer for ten minutes call mom at seven thirty what is the weather "
    "like tomorrow morning play some relaxing music in the living room remind me to water the plants"
).split()


def sentences(n: int = 200, seed: int = 0) -> list[str]:
    """Raw transcripts with case, punctuation and numbers in digits, as corpora write them."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(3, 9))
        if i % 5 == 0:
            words.insert(1, rng.choice(["2", "21st", "1984", "$3.50", "10%"]))
        out.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ""]))
    return out


def train_sp(kind: str, vocab_size: int = 80, normalizer: str = "english") -> SentencePieceTokenizer:
    return build_tokenizer(TokenizerConfig(kind=kind, vocab_size=vocab_size, normalizer=normalizer), sentences())


# ----------------------------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_sentencepiece_round_trip_specials_and_vocab_size(kind):
    tok = train_sp(kind)
    assert isinstance(tok, SentencePieceTokenizer) and tok.kind == kind
    assert tok.tokens[: len(SPECIALS)] == SPECIALS
    assert (tok.blank, tok.pad, tok.sos, tok.eos, tok.unk) == (0, 1, 2, 3, 4)
    assert len(tok) == 80 and len(set(tok.tokens)) == 80
    assert any(len(t.lstrip("\u2581")) > 2 for t in tok.tokens[len(SPECIALS) :])  # real multi-character pieces
    norm = get_normalizer("english")
    for raw in sentences(50, seed=1):  # held-out sentences of the same words
        ids = tok.encode(raw)
        assert ids and min(ids) >= len(SPECIALS) and max(ids) < len(tok)
        assert tok.decode(ids) == norm(raw)  # encode normalises; decode gives the normalised text back
        assert tok.encode(norm(raw)) == ids
    ids = tok.encode("call mom")
    assert tok.decode(ids + [tok.eos] + tok.encode("junk")) == "call mom"  # stops at <eos>
    assert tok.decode([tok.sos, *ids, tok.pad, tok.blank]) == "call mom"  # other specials dropped
    assert len(ids) < len("call mom")  # pieces, not characters


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_sentencepiece_unseen_words_and_determinism(kind):
    tok = train_sp(kind)
    unseen = "quokka zebra juxtapose fjord's"  # letters a-z and the apostrophe are always in the vocabulary
    ids = tok.encode(unseen)
    assert tok.unk not in ids and tok.decode(ids) == unseen
    assert tok.unk in tok.encode("naïve")  # a character never seen in training (english keeps accents)
    assert train_sp(kind).to_dict() == tok.to_dict()  # same transcripts, same config: the same model


def test_vocabulary_size_and_kind_errors():
    with pytest.raises(ValueError, match=r"tokenizer.vocab_size=5000.*at most|tokenizer.vocab_size=5000.*<="):
        train_sp("bpe", vocab_size=5000)
    with pytest.raises(ValueError, match="tokenizer.vocab_size=10"):
        train_sp("unigram", vocab_size=10)  # fewer than the specials + the a-z characters
    with pytest.raises(ValueError, match="tokenizer.kind"):
        build_tokenizer(TokenizerConfig(kind="wordpiece"), ["a b"])
    with pytest.raises(ValueError, match="unknown text normaliser 'klingon'"):
        build_tokenizer(TokenizerConfig(normalizer="klingon"), ["a b"])


@pytest.mark.parametrize("kind", ["char", "bpe", "unigram"])
def test_to_dict_survives_weights_only_load(kind, tmp_path):
    tok = build_tokenizer(TokenizerConfig(kind=kind, vocab_size=80, normalizer="ljspeech"), sentences())
    path = tmp_path / "tok.pt"
    torch.save({"tokenizer": tok.to_dict()}, path)
    d = torch.load(path, weights_only=True)["tokenizer"]
    json.dumps(d)  # plain types only
    again = tokenizer_from_dict(d)
    assert type(again) is type(tok) and again.kind == kind and again.tokens == tok.tokens
    assert again.normalizer.name == "ljspeech"
    for text in sentences(20, seed=2) + ["Dr. Smith paid $5 in 1905."]:
        assert again.encode(text) == tok.encode(text)
        assert again.decode(again.encode(text)) == tok.decode(tok.encode(text))


def test_char_tokenizer_normalises_with_its_normalizer_and_old_dicts_load():
    tok = CharTokenizer.build(["Room 42, please"], normalizer="digits")
    assert tok.decode(tok.encode("Room 42!")) == "room four two"
    old = {"kind": "char", "tokens": CharTokenizer.build(["abc"]).tokens}  # a model file from before normalisers
    assert tokenizer_from_dict(old).normalizer.name == "default"


# ----------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "n, words",
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (42, "forty two"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (999, "nine hundred ninety nine"),
        (1000, "one thousand"),
        (1234, "one thousand two hundred thirty four"),
        (1_000_001, "one million one"),
        (2_000_300_000, "two billion three hundred thousand"),
        (-3, "minus three"),
    ],
)
def test_cardinal(n, words):
    assert cardinal(n) == words


def test_ordinal_and_year():
    assert [ordinal(n) for n in (1, 2, 3, 4, 5, 8, 9, 12, 20, 21, 100, 103)] == [
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "eighth",
        "ninth",
        "twelfth",
        "twentieth",
        "twenty first",
        "one hundredth",
        "one hundred third",
    ]
    assert [year(n) for n in (1984, 1905, 1900, 2000, 2007, 2010, 2024, 1066)] == [
        "nineteen eighty four",
        "nineteen oh five",
        "nineteen hundred",
        "two thousand",
        "two thousand seven",
        "twenty ten",
        "twenty twenty four",
        "ten sixty six",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I have 3 cats", "i have three cats"),
        ("On the 21st of May, 1984.", "on the twenty first of may nineteen eighty four"),
        ("the 2nd and 3rd and 11th", "the second and third and eleventh"),
        ("1,250,000 people", "one million two hundred fifty thousand people"),
        ("pi is 3.14", "pi is three point one four"),
        ("It costs $3.50", "it costs three dollars fifty cents"),
        ("$1 and £2 and €0.05", "one dollar and two pounds and five cents"),
        ("$2.5 million", "two point five million dollars"),
        ("down 10% or 2.5 %", "down ten percent or two point five percent"),
        ("at 7:05 or 9:00 or 12:30", "at seven oh five or nine o'clock or twelve thirty"),
        ("the 1980s and the '90s", "the nineteen eighties and the nineties"),
        ("agent 007", "agent zero zero seven"),
        ("it was -5 today", "it was minus five today"),
        ("an mp3 file", "an mp three file"),
        ("Tom & Jerry", "tom and jerry"),
    ],
)
def test_english_normaliser_reads_numbers(text, expected):
    assert get_normalizer("english")(text) == expected


def test_expand_numbers_leaves_words_and_case_alone():
    assert " ".join(expand_numbers("Call Mom, 2 times!").split()) == "Call Mom, two times!"


# ----------------------------------------------------------------------------------------------- normalisers


def test_named_normalisers():
    assert get_normalizer("default")("  Hello, World! 42 ") == "hello world 42"  # the old behaviour, digits kept
    assert get_normalizer()("It’s a well-known 'fact'.") == "it's a well known fact"
    assert get_normalizer("digits")("Dial 4 2, then 105.") == "dial four two then one zero five"
    assert get_normalizer("ljspeech")("Mr. and Mrs. Smith met Dr. Brown at the café in 1865.") == (
        "mister and missus smith met doctor brown at the cafe in eighteen sixty five"
    )
    assert get_normalizer("ljspeech")("mr smith") == "mister smith"  # manifests may have lost the period
    assert get_normalizer("commonvoice")("Ça VA, l\u02bcami? 3") == "ça va l'ami 3"
    assert get_normalizer("librispeech")("CHAPTER 12 THE END") == "chapter twelve the end"
    with pytest.raises(ValueError, match="known: default"):
        get_normalizer("nope")


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_normalisers_are_idempotent_and_described(name):
    norm = NORMALIZERS[name]
    assert norm.name == name and norm.description
    for text in sentences(40) + ["Mr. O'Neil's 2nd café, 10:30 — $4.99 (1984)!"]:
        once = norm(text)
        assert norm(once) == once and once == once.strip() and "  " not in once


def test_error_rates_apply_the_normaliser_to_both_sides():
    refs, hyps = ["I have 3 cats.", "On the 21st"], ["i have three cats", "on the twenty first"]
    assert error_rates(refs, hyps, normalizer="english").wer == 0.0
    assert error_rates(refs, hyps).wer > 0  # default keeps digits: "3" is not "three"
    assert error_rates(["room 42"], ["Room 4 2"], normalizer="digits").wer == 0.0
    assert error_rates(["Hello"], ["hello"], normalize=False).wer == 100.0  # no normalisation at all


# ----------------------------------------------------------------------------------------------- config


def test_tokenizer_config_section():
    cfg = load_config(None, ["tokenizer.kind=unigram", "tokenizer.vocab_size=300", "tokenizer.normalizer=english"])
    assert cfg.tokenizer == TokenizerConfig("unigram", 300, 1.0, "english")
    assert cfg.to_dict()["tokenizer"]["vocab_size"] == 300
    with pytest.raises(ConfigError, match="tokenizer.vocab"):
        load_config(None, ["tokenizer.vocab=3"])


@pytest.mark.parametrize("conf", sorted((ROOT / "recipes").glob("*/conf.yaml")), ids=lambda p: p.parent.name)
def test_recipe_tokenizers_are_valid(conf):
    cfg = load_config(conf)
    assert cfg.tokenizer.kind in ("char", "bpe", "unigram")
    get_normalizer(cfg.tokenizer.normalizer)  # a known name


# ----------------------------------------------------------------------------------------------- end to end


def test_training_with_bpe_writes_a_model_that_loads_and_transcribes(tmp_path, capsys):
    from conftest import TINY_OVERRIDES, make_tone_corpus

    from asr.cli import main
    from asr.data.manifest import read_manifest
    from asr.recognizer import load_model
    from asr.training import train

    corpus = make_tone_corpus(tmp_path / "tones", n_train=32, n_dev=4, n_test=3)
    overrides = TINY_OVERRIDES + [
        f"data.train_manifest={corpus['train']}",
        f"data.dev_manifest={corpus['dev']}",
        f"train.out_dir={tmp_path / 'exp'}",
        "train.max_epochs=1",
        "train.num_threads=1",  # tiny: 1 thread is fastest
        "tokenizer.kind=bpe",
        "tokenizer.vocab_size=38",
        "tokenizer.normalizer=english",
    ]
    threads = torch.get_num_threads()
    try:
        path = train(load_config(None, overrides))
    finally:
        torch.set_num_threads(threads)  # train() sets it process-wide; leave other tests as they were
    blob = torch.load(path, weights_only=True)
    assert blob["tokenizer"]["kind"] == "bpe" and blob["tokenizer"]["normalizer"] == "english"
    assert blob["config"]["tokenizer"]["kind"] == "bpe" and len(blob["tokenizer"]["tokens"]) == 38
    rec = load_model(path)
    assert isinstance(rec.tokenizer, SentencePieceTokenizer) and rec.network.ctc.out_features == 38
    texts = [t.text for t in rec.transcribe([u.audio_filepath for u in read_manifest(corpus["test"])], beam_size=2)]
    assert len(texts) == 3 and all(isinstance(t, str) and "<" not in t for t in texts)

    capsys.readouterr()
    assert main(["evaluate", "--model", str(path), "--manifest", str(corpus["test"]), "--beam-size", "1"]) == 0
    assert "text normalisation (references and hypotheses): english:" in capsys.readouterr().out
