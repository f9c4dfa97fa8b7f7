"""Numbers written as digits -> English words, the way they are usually read aloud (for text normalisation).

    expand_numbers("In 1984 I paid $3.50 for 2 tickets, 10% off, on the 21st at 7:05.")
      -> "In nineteen eighty four I paid three dollars fifty cents for two tickets, ten percent off, on the
          twenty first at seven oh five."
    cardinal(1234) -> "one thousand two hundred thirty four";  ordinal(22) -> "twenty second"
    year(1905) -> "nineteen oh five";  spell_digits("42") -> " four two "

Handled: integers up to 10**21 - 1 (with or without thousands commas; larger ones and ones with a leading zero,
like "007", are read digit by digit), negative numbers ("-5" after a space), ordinals ("1st", "22nd", "103rd"),
years (a bare four-digit number from 1001 to 2999: "1984" -> "nineteen eighty four", "2005" -> "two thousand five",
"1900" -> "nineteen hundred"), decades ("1980s", "80s"), decimals ("3.14" -> "three point one four"), percent,
money in $ £ € ¥ with cents/pence and scale words ("$1.5 million"), clock times ("7:05" -> "seven oh five",
"9:00" -> "nine o'clock"), "&" -> "and", and digits glued to letters ("mp3" -> "mp three").
Not handled: fractions ("1/2" reads "one two"), ranges and phone numbers (read as separate numbers), Roman
numerals, units and symbols other than % and currency ("25°C", "5 km" stay as written), dates ("3/4/2020"),
version strings, "am"/"pm", and any language but English. Four-digit non-years are read as years ("2500 people" ->
"twenty five hundred people"), and American style: no "and" inside numbers ("one hundred one").
"""

from __future__ import annotations

import re

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SCALES = ["", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion"]
_IRREGULAR_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
# symbol -> (unit, units, subunit, subunits)
CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", "sen", "sen"),
}


def _below_thousand(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = [ONES[hundreds], "hundred"] if hundreds else []
    if rest >= 20:
        words.append(TENS[rest // 10])
        rest %= 10
        if rest:
            words.append(ONES[rest])
    elif rest or not words:
        words.append(ONES[rest])
    return words


def cardinal(n: int) -> str:
    """42 -> "forty two"; 1_000_001 -> "one million one"; -3 -> "minus three"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n >= 1000 ** len(SCALES):
        return spell_digits(str(n)).strip()
    if n < 1000:
        return " ".join(_below_thousand(n))
    words: list[str] = []
    for scale in reversed(range(len(SCALES))):
        group, n = divmod(n, 1000**scale)
        if group:
            words += _below_thousand(group) + ([SCALES[scale]] if scale else [])
    return " ".join(words)


def ordinal(n: int) -> str:
    """1 -> "first", 22 -> "twenty second", 100 -> "one hundredth"."""
    *head, last = cardinal(n).split()
    if last in _IRREGULAR_ORDINALS:
        last = _IRREGULAR_ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(head + [last])


def year(n: int) -> str:
    """As years are read: 1984 -> "nineteen eighty four", 1905 -> "nineteen oh five", 2007 -> "two thousand seven"."""
    if not 1000 < n < 3000 or 2000 <= n < 2010:
        return cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{cardinal(hi)} hundred"
    return f"{cardinal(hi)} {'oh ' + ONES[lo] if lo < 10 else cardinal(lo)}"


def spell_digits(digits: str) -> str:
    """One word per digit, padded with spaces so it never glues to a neighbour: "105" -> " one zero five "."""
    return " " + " ".join(ONES[int(d)] for d in digits if d.isdigit()) + " "


def _plural(words: str) -> str:
    """ "nineteen eighty" -> "nineteen eighties" (decades)."""
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + ("es" if words.endswith(("x", "s")) else "s")


def integer(digits: str) -> str:
    """A digit string (commas allowed) read as a number: leading zeros and very long strings digit by digit."""
    digits = digits.replace(",", "")
    if (len(digits) > 1 and digits[0] == "0") or len(digits) > 3 * len(SCALES):
        return spell_digits(digits).strip()
    return cardinal(int(digits))


def decimal(whole: str, frac: str) -> str:
    """("3", "14") -> "three point one four"; an empty whole part reads "point five"."""
    head = integer(whole) + " " if whole else ""
    return f"{head}point{spell_digits(frac).rstrip()}"


def _number(text: str) -> str:
    whole, _, frac = text.partition(".")
    return decimal(whole, frac) if frac else integer(whole)


_NUM = r"\d{1,3}(?:,\d{3})+|\d+"  # 1,234,567 or 1234567
_MONEY = re.compile(rf"([$£€¥])\s?({_NUM})(?:\.(\d+))?(?:\s?(thousand|million|billion|trillion)\b)?", re.IGNORECASE)
_PERCENT = re.compile(rf"(?<![\d.])((?:{_NUM})(?:\.\d+)?)\s?%")
_TIME = re.compile(r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
_ORDINAL = re.compile(rf"(?<![\d,.])({_NUM})(st|nd|rd|th)\b", re.IGNORECASE)
_DECADE = re.compile(r"(?<![\d,.'])'?(\d+)'?s\b")
_DECIMAL = re.compile(rf"(?<![\d.,])({_NUM})?\.(\d+)(?![.\d])")
_NEGATIVE = re.compile(r"(?:^|(?<=[\s(]))[-\u2212](?=\d)")
_INTEGER = re.compile(rf"(?<!\d)({_NUM})(?!\d)")
_AMPERSAND = re.compile(r"\s*&\s*")


def _money(m: re.Match) -> str:
    unit, units, sub, subs = CURRENCIES[m.group(1)]
    whole, frac, scale = m.group(2), m.group(3) or "", m.group(4)
    if scale:  # "$1.5 million" -> "one point five million dollars"
        return f" {_number(whole + ('.' + frac if frac else ''))} {scale.lower()} {units} "
    if len(frac) > 2:
        return f" {decimal(whole, frac)} {units} "
    n, cents = int(whole.replace(",", "")), int(frac.ljust(2, "0")) if frac else 0
    parts = [f"{integer(whole)} {unit if n == 1 else units}"] if n or not cents else []
    if cents:
        parts.append(f"{cardinal(cents)} {sub if cents == 1 else subs}")
    return " " + " ".join(parts) + " "


def _time(m: re.Match) -> str:
    hour, minute = cardinal(int(m.group(1))), int(m.group(2))
    if minute == 0:
        return f" {hour} o'clock "
    return f" {hour} {'oh ' + ONES[minute] if minute < 10 else cardinal(minute)} "


def _read(digits: str) -> str:
    """A bare number: four digits read as a year, anything else as an integer."""
    return year(int(digits)) if len(digits) == 4 and digits[0] != "0" else integer(digits)


def _decade(m: re.Match) -> str:
    return f" {_plural(_read(m.group(1)))} "  # "1980s" -> "nineteen eighties", "80s" -> "eighties"


def _plain(m: re.Match) -> str:
    return f" {_read(m.group(1))} "


def expand_numbers(text: str) -> str:
    """Every number written with digits in `text` -> words (see the module docstring for what is covered).
    Case and punctuation are left to the caller; replaced numbers are padded with spaces."""
    text = _AMPERSAND.sub(" and ", text)
    text = _MONEY.sub(_money, text)
    text = _PERCENT.sub(lambda m: f" {_number(m.group(1))} percent ", text)
    text = _TIME.sub(_time, text)
    text = _ORDINAL.sub(lambda m: f" {ordinal(int(m.group(1).replace(',', '')))} ", text)
    text = _DECADE.sub(_decade, text)
    text = _DECIMAL.sub(lambda m: f" {decimal(m.group(1) or '', m.group(2))} ", text)
    text = _NEGATIVE.sub(" minus ", text)
    return _INTEGER.sub(_plain, text)
