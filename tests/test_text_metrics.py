import pytest

from asr.metrics import error_rates, word_errors
from asr.text import SPECIALS, CharTokenizer, normalize_text, tokenizer_from_dict


def test_normalize_text():
    assert normalize_text("  Hello, World!  ") == "hello world"
    assert normalize_text("It’s a well-known 'fact'.") == "it's a well known fact"
    assert normalize_text("Ça VA\tbien") == "ça va bien"


def test_char_tokenizer_round_trip_and_specials():
    tok = CharTokenizer.build(["Call mom", "it's ten"])
    assert tok.tokens[: len(SPECIALS)] == SPECIALS
    assert {" ", "'"} | set("abcdefghijklmnopqrstuvwxyz") <= set(tok.tokens)
    ids = tok.encode("It's TEN, mom!")
    assert tok.decode(ids) == "it's ten mom"
    assert tok.decode(ids + [tok.eos] + tok.encode("junk")) == "it's ten mom"  # stops at <eos>
    assert tok.encode("é")[0] == tok.unk  # unseen character
    again = tokenizer_from_dict(tok.to_dict())
    assert again.tokens == tok.tokens and again.encode("call") == tok.encode("call")


def test_error_rates_counts():
    refs = ["the cat sat", "on the mat", "hello"]
    hyps = ["the cat sat down", "on mat", "jello"]
    r = error_rates(refs, hyps)
    assert (r.substitutions, r.deletions, r.insertions, r.ref_words) == (1, 1, 1, 7)
    assert r.wer == pytest.approx(100 * 3 / 7)
    assert r.sentence_errors == 3
    # Same normalisation on both sides: case and punctuation are not errors.
    assert error_rates(["Hello, World."], ["hello world"]).wer == 0.0
    assert error_rates(["abc"], ["abd"]).cer == pytest.approx(100 / 3)


def test_word_errors_name_what_was_confused():
    refs = ["the cat sat", "on the mat", "hello", "five five", ""]
    hyps = ["the cat sat down", "on mat", "jello", "nine nine", "oops"]
    e = word_errors(refs, hyps)
    assert e.substitutions == {("hello", "jello"): 1, ("five", "nine"): 2}
    assert e.deletions == {"the": 1} and e.insertions == {"down": 1, "oops": 1}
    # The counts add up to error_rates' own S/D/I.
    r = error_rates(refs, hyps)
    assert (sum(e.substitutions.values()), sum(e.deletions.values()), sum(e.insertions.values())) == (
        r.substitutions,
        r.deletions,
        r.insertions,
    )
    assert e.most_common(3) == [("five -> nine", 2), ("(inserted) -> down", 1), ("(inserted) -> oops", 1)]
    assert word_errors(["Hello, World."], ["hello world"]).most_common() == []


def test_empty_reference_counts_insertions():
    r = error_rates(["", "a b"], ["x y", "a b"])
    assert r.insertions == 2 and r.ref_words == 2 and r.wer == pytest.approx(100.0)
    with pytest.raises(ValueError):
        error_rates(["a"], [])
