"""Synthetic speech corpus: eSpeak NG speaking sentences from a built-in grammar -> 16 kHz wavs + JSONL manifests.

    prepare_synth(out_dir, n_train=3000, n_dev=200, n_test=300, seed=0) -> {"train": Path, "dev": Path, "test": Path}
    ESpeak().synthesize("call mom", voice="en-us+f2", rate=160) -> (float32 samples, 22050)
    python -m asr.data.synth --out data/synth
    prepare_tts("data/an4/train.jsonl", "data/an4_tts", copies=2, spell_letters=True) -> {"train": ..., "mixed": ...}

Needs no download: the sentences come from a small grammar (commands, requests, times, numbers, digit strings;
about 240 words) and are spoken by eSpeak NG (via ctypes, from the optional `espeakng-loader` package) in
8 English accents x 47 voice variants, with per-utterance rate, pitch, gain, silence and noise jitter. A voice
identity is accent+variant (e.g. "en-gb-scotland+m3"); dev and test use identities never heard in training, so a
model has to generalise to new voices rather than memorise them.

eSpeak NG is GPL-3.0 and only generates the corpus: it is imported here, lazily, and nowhere else in `asr`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import math
import random
import shutil
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from asr.audio import resample, write_audio
from asr.data.common import is_prepared, mark_prepared, unmark_prepared
from asr.data.manifest import Utterance, read_manifest, write_manifest
from asr.text import normalize_text

VERSION = 1  # bump when the generated audio or text changes, so cached corpora are rebuilt
SPLITS = ("train", "dev", "test")
SAMPLE_RATE = 16000
_BATCH = 256  # utterances per eSpeak session and per resampling call
INSTALL_HINT = "pip install 'speech-transformer-asr[corpus]' (or: pip install espeakng-loader)"


# ---------------------------------------------------------------------------------------------------------------
# eSpeak NG through ctypes
# ---------------------------------------------------------------------------------------------------------------


class VoiceError(ValueError):
    """An eSpeak voice name (language or +variant) does not exist."""


# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # otherwise a bad data path makes the library call exit()
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# eSpeak calls libc rand() (process-global) and each ESpeak collects audio through one callback: one synthesis at a
# time in the whole process. Re-entrant, so a session can hold it while its utterances take it again.
_LOCK = threading.RLock()
_DEFAULT_LOCK = threading.Lock()
_DEFAULT: "ESpeak | None" = None


def _import_loader():
    try:
        import espeakng_loader
    except ImportError:
        raise ImportError(f"the synthetic corpus needs eSpeak NG, which is not installed: {INSTALL_HINT}") from None
    return espeakng_loader


def _dlclose(handle: int) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary")
    close(handle)


class ESpeak:
    """eSpeak NG (from `espeakng_loader`) driven through ctypes.

    eSpeak carries hidden state from one utterance to the next (the phase of its pitch-flutter table, its gain
    control, ...), which Terminate/Initialize do not reset: the same call gives slightly different audio depending on
    what was spoken before. So each `synthesize` call loads a private copy of the library afresh (dlopen +
    Initialize take under a millisecond; loading the first voice ~5 ms), seeds both random sources (eSpeak's own and
    libc's rand(), used by Klatt breath noise) and unloads it: the same arguments always give the same samples.
    Inside `with espeak.session():` calls share one instance instead, which is 2-3x faster and still reproducible
    as long as the same calls are made in the same order. The private copy also keeps us clear of anyone else in
    the process using espeakng_loader's library.
    """

    def __init__(self) -> None:
        loader = _import_loader()
        self.data_path = Path(loader.get_data_path())
        src = Path(loader.get_library_path())
        self._tmp = tempfile.mkdtemp(prefix="asr-espeak-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self._lib_path = str(Path(self._tmp) / src.name)
        shutil.copy(src, self._lib_path)
        self._libc = ctypes.CDLL(None) if sys.platform != "win32" else ctypes.cdll.msvcrt
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # referenced here so it outlives every synthesis
        self._session: ctypes.CDLL | None = None
        self.variants: frozenset[str] = frozenset(p.name for p in (self.data_path / "voices" / "!v").iterdir())
        with self._instance() as lib:
            self.version: str = lib.espeak_Info(None).decode()

    def _collect(self, wav, n: int, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    @contextlib.contextmanager
    def _fresh(self) -> Iterator[ctypes.CDLL]:
        """A newly loaded and initialised library instance, unloaded again on exit."""
        lib = ctypes.CDLL(self._lib_path, mode=getattr(ctypes, "RTLD_LOCAL", 0))
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_int]
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p,
                ctypes.c_size_t,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_uint,
                ctypes.c_uint,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
            lib.espeak_Info.restype = ctypes.c_char_p
            sr = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), _INITIALIZE_DONT_EXIT
            )
            if sr <= 0:
                raise RuntimeError(f"eSpeak NG failed to initialise with its data at {self.data_path}")
            lib.sample_rate = sr
            lib.espeak_SetSynthCallback(self._callback)
            try:
                yield lib
            finally:
                lib.espeak_Terminate()
        finally:
            _dlclose(lib._handle)

    @contextlib.contextmanager
    def _instance(self) -> Iterator[ctypes.CDLL]:
        """The session's library instance, or a fresh one; holds the lock."""
        with _LOCK:
            if self._session is not None:
                yield self._session
            else:
                with self._fresh() as lib:
                    yield lib

    @contextlib.contextmanager
    def session(self) -> Iterator["ESpeak"]:
        """Share one library instance between the calls inside (faster; results then depend on call order)."""
        with _LOCK, self._fresh() as lib:
            self._session = lib
            try:
                yield self
            finally:
                self._session = None

    def _set_voice(self, lib: ctypes.CDLL, voice: str) -> None:
        language, _, variant = voice.partition("+")
        # eSpeak silently ignores an unknown variant, so check it against the data folder ourselves.
        if variant and variant not in self.variants:
            raise VoiceError(
                f"unknown eSpeak voice variant {variant!r} in {voice!r} "
                f"(variants are the files in {self.data_path / 'voices' / '!v'})"
            )
        if not language or lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise VoiceError(
                f"unknown eSpeak voice {voice!r} (expected a language such as 'en-us', "
                f"optionally with '+variant', e.g. 'en-us+f2')"
            )

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        word_gap: int = 0,
        seed: int = 0,
    ) -> tuple[np.ndarray, int]:
        """Speak `text`: (samples float32 in [-1, 1], sample_rate). rate in words/minute, pitch and range 0-100,
        word_gap in units of 10 ms; seed feeds eSpeak's random sources."""
        with self._instance() as lib:
            self._set_voice(lib, voice)
            for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_WORDGAP, word_gap)):
                lib.espeak_SetParameter(param, int(value), 0)
            lib.espeak_ng_SetRandSeed(seed & 0x7FFFFFFF)
            self._libc.srand(seed & 0xFFFFFFFF)
            self._chunks = []
            data = text.encode("utf-8")
            err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != _EE_OK or lib.espeak_Synchronize() != _EE_OK:
                raise RuntimeError(f"eSpeak NG failed (error {err}) to speak {text!r} with voice {voice!r}")
            chunks, self._chunks = self._chunks, []
            sample_rate = lib.sample_rate
        wav = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return wav.astype(np.float32) / 32768.0, sample_rate

    def phonemes(self, text: str, voice: str = "en-us") -> str:
        """eSpeak's IPA transcription of `text` (to check how words will be pronounced)."""
        with self._instance() as lib:
            self._set_voice(lib, voice)
            buf = ctypes.c_char_p(text.encode("utf-8"))
            out = []
            while buf.value:  # one clause per call; the pointer advances, and becomes NULL at the end
                out.append(lib.espeak_TextToPhonemes(ctypes.byref(buf), _CHARS_UTF8, 0x02).decode())
            return " ".join(out)


def get_espeak() -> ESpeak:
    """The process-wide `ESpeak` (created on first use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ESpeak()
        return _DEFAULT


# ---------------------------------------------------------------------------------------------------------------
# Voices and the speaker split
# ---------------------------------------------------------------------------------------------------------------

# eSpeak's English accents (espeak-ng-data/lang/gmw/en*; en-shaw is only a different alphabet).
ACCENTS = ("en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
# Variants (espeak-ng-data/voices/!v) that sound like a person. Left out: whispers (whisper, whisperf, caleb),
# robots and heavy echo (robosoft*, *Robot, RicishayMax*, Marco), extreme formant/pitch designs (Alicia, zac,
# kaukovalta, Demonic, Lee, shelby, ian, gustave, marcelo, david, norbert, Jacky, iven, iven2), strong pitch tremor
# that defeats a pitch tracker (croak, grandpa), the unstable `fast`, Storm (forces en-us), low-voicing klatt/klatt2,
# and near-duplicates of kept ones (edward2, Gene2, iven4, klatt5/6, steph2/3, Henrique, Hugo, Diogo ...).
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "Andrea",
    "Annie",
    "anika",
    "aunty",
    "belinda",
    "grandma",
    "linda",
    "steph",
    "Alex",
    "Andy",
    "Denis",
    "Gene",
    "Mario",
    "Michael",
    "Mike",
    "Nguyen",
    "adam",
    "benjamin",
    "boris",
    "edward",
    "iven3",
    "klatt3",
    "klatt4",
    "max",
    "michel",
    "miguel",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "sandro",
    "travis",
    "victor",
)
# Variants never heard in training, in any accent (one female-designed, one male-designed per split).
HELD_OUT_VARIANTS = {"dev": ("f2", "max"), "test": ("f5", "m3")}
_SPLIT_SALT = "asr-synth-voices-v1"  # the voice split is fixed: it does not move with the corpus seed


def voice_split() -> dict[str, list[str]]:
    """Voice identities ("accent+variant") by split; dev and test identities never occur in train.

    The held-out variants go to dev/test in every accent. Each other variant sends one accent to test and another to
    dev, rotating through the accents so each accent is held out about equally often; every held-out combination is
    therefore new, while its accent and (for most) its variant are heard in training with other partners.
    """
    split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for s, variants in HELD_OUT_VARIANTS.items():
        split[s] += [f"{a}+{v}" for v in variants for a in ACCENTS]
    held = {v for vs in HELD_OUT_VARIANTS.values() for v in vs}
    rest = [v for v in VARIANTS if v not in held]
    random.Random(_SPLIT_SALT).shuffle(rest)
    n = len(ACCENTS)
    for k, v in enumerate(rest):
        for j, a in enumerate(ACCENTS):
            s = "test" if j == k % n else "dev" if j == (k + n // 2) % n else "train"
            split[s].append(f"{a}+{v}")
    return {s: sorted(ids) for s, ids in split.items()}


# ---------------------------------------------------------------------------------------------------------------
# The grammar: sentences as they are spoken (lower-case words, apostrophes; "?" only shapes the intonation)
# ---------------------------------------------------------------------------------------------------------------

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
PARTS_OF_DAY = ["morning", "afternoon", "evening", "night"]
WHEN = [
    "today",
    "tomorrow",
    "tonight",
    "this morning",
    "this afternoon",
    "this evening",
    "this weekend",
    "next week",
    "tomorrow morning",
    "tomorrow night",
]
ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "garage", "office", "hallway", "garden"]
DEVICES = ["lights", "light", "lamp", "fan", "heater", "radio", "television"]
OPENABLE = ["blinds", "curtains", "window", "door"]
PEOPLE = ["mom", "dad", "grandma", "my sister", "my brother", "the doctor", "the office", "sarah", "peter", "home"]
MESSAGES = [
    "i'm on my way",
    "i'll be late",
    "see you soon",
    "i'm running late",
    "call me back",
    "i'm home",
    "i'll call you later",
    "good night",
    "thank you",
]
ITEMS = ["milk", "eggs", "bread", "cheese", "coffee", "tea", "apples", "bananas", "potatoes", "water"]
TASKS = [
    "call mom",
    "take out the trash",
    "water the plants",
    "feed the cat",
    "walk the dog",
    "buy milk",
    "pick up the kids",
    "lock the door",
    "call the doctor",
    "buy some bread",
    "go to the office",
]
GENRES = ["jazz", "rock", "classical", "pop", "relaxing"]
SHORT = [
    "yes",
    "no",
    "stop",
    "cancel",
    "okay",
    "pause",
    "help",
    "next",
    "thank you",
    "thanks",
    "go back",
    "louder",
    "quieter",
    "good morning",
    "good night",
    "yes please",
    "no thanks",
    "stop the music",
    "play it again",
    "what time is it?",
    "is it cold outside?",
    "what's the weather like?",
]
POLITE = ["please", "can you", "could you", "hey"]


def number_words(n: int) -> str:
    """0..99 in words: 42 -> "forty two"."""
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] + ("" if ones == 0 else " " + ONES[ones])


def _num(rng: random.Random, lo: int = 1, hi: int = 99) -> str:
    return number_words(rng.randint(lo, hi))


def _when(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.3:
        return f"on {rng.choice(DAYS)}"
    if r < 0.55:
        return f"on {rng.choice(DAYS)} {rng.choice(PARTS_OF_DAY)}"
    return rng.choice(WHEN)


def _be(noun: str) -> str:
    return "are" if noun.endswith("s") else "is"


def _polite(rng: random.Random, request: str) -> str:
    """A request, sometimes with "please", "can you" ... (requests only: the result is still a command)."""
    r = rng.random()
    if request.endswith("?"):
        return request
    if r < 0.15:
        return f"{rng.choice(POLITE)} {request}"
    if r < 0.25:
        return f"{request} please"
    return request


def _digits(rng: random.Random) -> str:
    """A digit string, zero sometimes said "oh": "four one one seven"."""
    digits = [rng.randrange(10) for _ in range(rng.randint(3, 7))]
    words = " ".join("oh" if d == 0 and rng.random() < 0.4 else ONES[d] for d in digits)
    prefix = rng.choice(
        [
            "",
            "",
            "",
            "dial",
            "call",
            "my pin is",
            "the code is",
            "extension",
            "enter",
            "the number is",
            "room",
            "my number is",
            "it's",
        ]
    )
    return f"{prefix} {words}"


def _clock(rng: random.Random) -> str:
    """A time of day as people say it: "seven thirty", "half past nine", "quarter to ten", "noon"."""
    h = rng.randint(1, 12)
    hour, next_hour = number_words(h), number_words(h % 12 + 1)
    r = rng.random()
    if r < 0.04:
        return rng.choice(["noon", "midnight"])
    if r < 0.2:
        return f"{hour} o'clock"
    if r < 0.55:
        m = rng.randint(1, 59)
        return f"{hour} {'oh ' + ONES[m] if m < 10 else number_words(m)}"
    if r < 0.7:
        return f"{rng.choice(['half past', 'quarter past'])} {hour}"
    if r < 0.8:
        return f"quarter to {next_hour}"
    m = number_words(rng.choice([5, 10, 20, 25]))
    return f"{m} past {hour}" if rng.random() < 0.5 else f"{m} to {next_hour}"


def _time(rng: random.Random) -> str:
    t = _clock(rng)
    if t in ("noon", "midnight") or rng.random() < 0.7:
        return t
    return f"{t} {rng.choice(['in the morning', 'in the evening', 'in the afternoon', 'tonight', 'tomorrow'])}"


def _alarm(rng: random.Random) -> str:
    t = _time(rng)
    return rng.choice(
        [
            f"wake me up at {t}",
            f"set an alarm for {t}",
            f"set the alarm for {t}",
            f"cancel the alarm for {t}",
            f"remind me at {t} to {rng.choice(TASKS)}",
            f"it's {_clock(rng)}",
            f"change my alarm to {t}",
            f"is there an alarm at {_clock(rng)}?",
            f"the meeting starts at {t}",
            f"meet me at {_clock(rng)}",
            f"wake me up at {_clock(rng)} {_when(rng)}",
            f"dinner is at {_clock(rng)}",
            f"it's {_clock(rng)} {_when(rng)}",
        ]
    )


def _timer(rng: random.Random) -> str:
    n = rng.randint(1, 99) if rng.random() < 0.6 else rng.choice([1, 2, 5, 10, 15, 20, 30, 45])
    unit = rng.choice(["minute", "minute", "second", "hour"])
    span, compound = f"{number_words(n)} {unit}{'' if n == 1 else 's'}", f"{number_words(n)} {unit}"
    return rng.choice(
        [
            f"set a timer for {span}",
            f"set a {compound} timer",
            f"add {span} to the timer",
            f"start a timer for {span}",
            f"remind me in {span} to {rng.choice(TASKS)}",
            f"call me back in {span}",
            f"wait {span}",
            f"cancel the {compound} timer",
            f"stop the timer in {span}",
        ]
    )


def _home(rng: random.Random) -> str:
    room, dev, onoff, thing = rng.choice(ROOMS), rng.choice(DEVICES), rng.choice(["on", "off"]), rng.choice(OPENABLE)
    return _polite(
        rng,
        rng.choice(
            [
                f"turn {onoff} the {room} {dev}",
                f"turn {onoff} the {dev} in the {room}",
                f"switch {onoff} the {room} {dev}",
                f"turn the {room} {dev} {onoff}",
                f"turn {onoff} the {dev}",
                f"dim the {room} lights",
                f"dim the {room} lights to {_num(rng)} percent",
                f"{rng.choice(['open', 'shut'])} the {room} {thing}",
                f"{rng.choice(['lock', 'unlock'])} the {rng.choice(['front', 'back', 'garage'])} door",
                f"set the {room} temperature to {_num(rng, 10, 90)} degrees",
                f"set the heating to {_num(rng, 10, 90)} degrees",
                f"turn the heating {rng.choice(['up', 'down'])} in the {room} {_when(rng)}",
                f"{_be(thing)} the {room} {thing} open?",
                f"{_be(dev)} the {room} {dev} {onoff}?",
                f"turn {onoff} all the lights",
                f"turn {onoff} everything in the {room}",
            ]
        ),
    )


def _media(rng: random.Random) -> str:
    vol, genre, room = _num(rng, 0, 99), rng.choice(GENRES), rng.choice(ROOMS)
    return _polite(
        rng,
        rng.choice(
            [
                f"play some {genre} music",
                f"play some {genre} music in the {room}",
                f"play {genre} music {_when(rng)}",
                f"set the volume to {vol}",
                f"turn the volume {rng.choice(['up', 'down'])} in the {room}",
                f"volume {vol}",
                f"play the {rng.choice(['next', 'last'])} {genre} song",
                f"pause the music in the {room}",
                f"play the news at {_clock(rng)}",
                f"play music in the {room}",
                f"play my {genre} playlist",
                f"turn the music {rng.choice(['up', 'down'])}",
                f"stop the music in the {room}",
                f"play the radio {_when(rng)}",
                f"play some music for {number_words(rng.randint(1, 60))} minutes",
            ]
        ),
    )


def _call(rng: random.Random) -> str:
    who, msg = rng.choice(PEOPLE), rng.choice(MESSAGES)
    return _polite(
        rng,
        rng.choice(
            [
                f"call {who}",
                f"call {who} {_when(rng)}",
                f"call {who} at {_clock(rng)}",
                f"phone {who}",
                f"send a message to {who} saying {msg}",
                f"text {who} {msg}",
                f"tell {who} {msg}",
                f"call {who} at {_clock(rng)} {_when(rng)}",
                f"send {who} a message",
                f"did {who} call {_when(rng)}?",
                f"remind me to call {who} {_when(rng)}",
            ]
        ),
    )


def _weather(rng: random.Random) -> str:
    when = _when(rng)
    return rng.choice(
        [
            f"what is the weather {when}?",
            f"what's the weather like {when}?",
            f"will it rain {when}?",
            f"will it snow {when}?",
            f"is it going to be sunny {when}?",
            f"how {rng.choice(['hot', 'cold', 'warm'])} will it be {when}?",
            f"do i need an umbrella {when}?",
            f"what's the temperature {rng.choice(['outside', 'in the ' + rng.choice(ROOMS)])}?",
            f"is it {rng.choice(['cold', 'hot', 'sunny', 'warm'])} outside?",
            f"what is the weather {when}",
        ]
    )


def _shopping(rng: random.Random) -> str:
    item = rng.choice(ITEMS)
    both = f"{item} and {rng.choice(ITEMS)}" if rng.random() < 0.35 else item
    return _polite(
        rng,
        rng.choice(
            [
                f"add {both} to the shopping list",
                f"add {both} to my list",
                f"remove {item} from the shopping list",
                f"do we need {item}?",
                f"buy {number_words(rng.randint(1, 12))} {item}",
                f"put {both} on the list",
                f"buy more {both}",
                f"we need {both}",
                f"is {item} on the list?",
                f"we are out of {both}",
            ]
        ),
    )


def _reminder(rng: random.Random) -> str:
    task = rng.choice(TASKS)
    return rng.choice(
        [
            f"remind me to {task}",
            f"remind me to {task} {_when(rng)}",
            f"remind me to {task} at {_clock(rng)}",
            f"don't let me forget to {task}",
            f"i need to {task} {_when(rng)}",
            f"what do i have {_when(rng)}?",
            f"add a meeting {_when(rng)} at {_clock(rng)}",
            f"cancel my meeting {_when(rng)}",
            f"i need to {task} at {_clock(rng)}",
            f"remind me {_when(rng)} to {task}",
        ]
    )


def _numbers(rng: random.Random) -> str:
    n = _num(rng, 0, 99)
    return rng.choice(
        [
            n,
            f"{n} degrees",
            f"{n} percent",
            f"number {n}",
            f"room {n}",
            f"{n} minutes",
            f"{n} and {_num(rng, 0, 99)}",
            f"it's {n} degrees outside",
            f"i need {n}",
            f"{n} {_num(rng, 0, 99)}",
        ]
    )


# (generator, weight): digit strings, times and numbers make up about a third, commands and requests the rest.
TEMPLATES: list[tuple[Callable[[random.Random], str], float]] = [
    (_digits, 0.12),
    (_alarm, 0.11),
    (_timer, 0.07),
    (_numbers, 0.07),
    (_home, 0.15),
    (_media, 0.09),
    (_call, 0.09),
    (_weather, 0.08),
    (_shopping, 0.08),
    (_reminder, 0.08),
    (lambda rng: rng.choice(SHORT), 0.05),
]


def make_sentence(rng: random.Random, max_words: int = 10) -> str:
    """One sentence as spoken (lower-case, maybe ending in "?"), 1..max_words words."""
    gens, weights = zip(*TEMPLATES)
    while True:
        text = " ".join(rng.choices(gens, weights)[0](rng).split())
        if 1 <= len(text.split()) <= max_words:
            return text


def vocabulary() -> set[str]:
    """Every word the grammar produces (for reports and tests): those of 20,000 sampled sentences, which already
    cover all of them (200,000 find no more)."""
    words: set[str] = set(ONES + TENS[2:] + DAYS + ["oh"])
    rng = random.Random(0)
    for _ in range(20000):
        words.update(make_sentence(rng).rstrip("?").split())
    return words


# ---------------------------------------------------------------------------------------------------------------
# Corpus generation
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class UtterancePlan:
    """Everything that determines one utterance's audio (the manifest records voice, rate and pitch)."""

    split: str
    index: int
    spoken: str  # the text given to eSpeak
    voice: str
    rate: int  # words per minute
    pitch: int  # 0-100, relative to the voice's own pitch
    pitch_range: int  # 0-100 intonation range
    word_gap: int  # extra pause between words, 10 ms units
    gain_db: float  # peak level of the speech, dBFS
    lead: float  # seconds of silence before / after the speech
    trail: float
    snr_db: float  # white noise over the whole file, relative to the speech power
    seed: int  # for eSpeak's random sources and the noise
    transcript: str | None = None  # when what is spoken is respelled for eSpeak (tts augmentation)

    @property
    def text(self) -> str:
        """The transcript: what was spoken, normalised (or the given transcript)."""
        return self.transcript if self.transcript is not None else normalize_text(self.spoken)

    @property
    def name(self) -> str:
        return f"{self.split}_{self.index:05d}"


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def plan_split(split: str, n: int, seed: int) -> list[UtterancePlan]:
    """The split's utterances. Each plan depends only on (seed, split, index), so n only adds or removes some
    (its audio also on the utterances before it in its batch: eSpeak's hidden state, see `ESpeak`)."""
    voices = voice_split()[split]
    order = voices[:]
    random.Random(_seed(seed, split, "voices")).shuffle(order)  # round-robin over voices: every voice gets ~n/len
    plans = []
    for i in range(n):
        rng = random.Random(_seed(seed, split, i))
        spoken = make_sentence(rng)  # first: the jitter draws come after it, as they always have
        plans.append(_jittered(rng, split, i, spoken, order[i % len(order)], _seed(seed, split, i, "audio")))
    return plans


def _jittered(
    rng: random.Random, split: str, index: int, spoken: str, voice: str, seed: int, transcript: str | None = None
) -> UtterancePlan:
    """A plan with random speaking rate, pitch, pauses, level, silences and noise."""
    return UtterancePlan(
        split=split,
        index=index,
        spoken=spoken,
        voice=voice,
        rate=rng.randint(130, 200),
        pitch=rng.randint(30, 70),
        pitch_range=rng.randint(30, 80),
        word_gap=rng.choice([0, 0, 0, 0, 1, 2, 3]),
        gain_db=rng.uniform(-20.0, -1.0),
        lead=rng.uniform(0.05, 0.4),
        trail=rng.uniform(0.05, 0.4),
        snr_db=rng.uniform(20.0, 40.0),
        seed=seed,
        transcript=transcript,
    )


def resample_many(wavs: Sequence[np.ndarray], sr: int, new_sr: int) -> list[np.ndarray]:
    """`asr.audio.resample` for many signals at once, packed end to end into the rows of one batch.

    torchaudio rebuilds its sinc kernel on every call (~0.1 s for 22050->16000) and convolves a batch far faster than
    one row at a time, while padding every signal to the longest would double the work. Each signal starts on a
    whole resampling period (441 samples in, 320 out), so its output lands at an exact offset, and a period of zeros
    after it keeps the filter (9 samples wide) from reaching its neighbour.
    """
    g = math.gcd(sr, new_sr)
    period_in, period_out = sr // g, new_sr // g
    spans = [(-(-w.size // period_in) + 1) * period_in for w in wavs]
    width, used, place = max(spans), [], [(0, 0)] * len(wavs)
    for i in sorted(range(len(wavs)), key=lambda i: -spans[i]):  # first fit, longest first
        row = next((r for r, u in enumerate(used) if u + spans[i] <= width), len(used))
        if row == len(used):
            used.append(0)
        place[i], used[row] = (row, used[row]), used[row] + spans[i]
    batch = np.zeros((len(used), width), np.float32)
    for w, (row, start) in zip(wavs, place):
        batch[row, start : start + w.size] = w
    out = resample(torch.from_numpy(batch), sr, new_sr).numpy()
    starts = [(row, start // period_in * period_out) for row, start in place]
    # ceil: the length resampling the signal alone gives
    return [out[row, s : s - (-w.size * period_out // period_in)] for w, (row, s) in zip(wavs, starts)]


def render(plans: Sequence[UtterancePlan], espeak: ESpeak, sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """Synthesise planned utterances: float32 samples at `sample_rate`, one array per plan."""
    with espeak.session():  # one library instance for the lot: loading a voice afresh would dominate the time
        spoken = [
            espeak.synthesize(p.spoken, p.voice, p.rate, p.pitch, p.pitch_range, p.word_gap, p.seed) for p in plans
        ]
    speech, sr = [], spoken[0][1]
    for plan, (wav, _) in zip(plans, spoken):
        loud = np.flatnonzero(np.abs(wav) > 1e-3)  # eSpeak pads with digital silence; we add our own, jittered
        if loud.size == 0:
            raise RuntimeError(f"eSpeak produced silence for {plan.spoken!r} with voice {plan.voice!r}")
        wav = wav[loud[0] : loud[-1] + 1]
        speech.append(wav * (10 ** (plan.gain_db / 20) / np.abs(wav).max()))
    out = []
    for plan, wav in zip(plans, resample_many(speech, sr, sample_rate)):
        power = float(np.mean(wav**2))
        pad = lambda s: np.zeros(int(round(s * sample_rate)), np.float32)  # noqa: E731
        wav = np.concatenate([pad(plan.lead), wav, pad(plan.trail)])
        noise = np.random.default_rng(plan.seed).standard_normal(wav.size)
        out.append((wav + np.sqrt(power / 10 ** (plan.snr_db / 10)) * noise).astype(np.float32))
    return out


def prepare_synth(
    out_dir: str | Path, n_train: int = 3000, n_dev: int = 200, n_test: int = 300, seed: int = 0, progress: bool = True
) -> dict[str, Path]:
    """Generate the corpus into out_dir (wavs/{split}/*.wav, {split}.jsonl); returns the manifest paths.

    Cached: a marker records the parameters, and a second call with the same ones returns at once. Otherwise the
    manifests and wavs/{train,dev,test} are rebuilt (out_dir is taken to belong to this corpus).
    """
    out = Path(out_dir)
    counts = {"train": n_train, "dev": n_dev, "test": n_test}
    manifests = {s: out / f"{s}.jsonl" for s in SPLITS}
    params = {"corpus": "synth", "version": VERSION, "seed": seed, **{f"n_{s}": n for s, n in counts.items()}}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"utterance counts must be >= 0, got {counts}")
    if is_prepared(out, manifests, params):
        print(f"synthetic corpus in {out}: already prepared")
        return manifests

    espeak = get_espeak()  # before touching out_dir: a missing library should leave an old corpus alone
    unmark_prepared(out)
    for s in SPLITS:
        shutil.rmtree(out / "wavs" / s, ignore_errors=True)
    utts: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    start = time.perf_counter()
    bar = _progress(sum(counts.values()), progress)
    for split in SPLITS:
        plans = plan_split(split, counts[split], seed)
        # Fixed batches in plan order, never spanning splits: the same audio every run, and dev/test audio does
        # not move when n_train changes.
        for i in range(0, len(plans), _BATCH):
            batch = plans[i : i + _BATCH]
            for plan, wav in zip(batch, render(batch, espeak)):
                path = out / "wavs" / split / f"{plan.name}.wav"
                write_audio(path, wav, SAMPLE_RATE)
                extra = {"speaker": plan.voice, "rate": plan.rate, "pitch": plan.pitch}
                utts[split].append(Utterance(str(path), wav.size / SAMPLE_RATE, plan.text, extra))
            bar.update(len(batch))
    bar.close()
    for s in SPLITS:
        write_manifest(manifests[s], utts[s])
    mark_prepared(out, {**params, "espeak_ng": espeak.version})

    print(f"synthetic corpus in {out} ({time.perf_counter() - start:.1f} s, eSpeak NG {espeak.version}):")
    for s in SPLITS:
        hours = sum(u.duration for u in utts[s]) / 3600
        voices = len({u.extra["speaker"] for u in utts[s]})
        print(f"  {s:5s} {len(utts[s]):6d} utterances  {hours:6.2f} h  {voices:4d} voices")
    return manifests


# ---------------------------------------------------------------------------------------------------------------
# TTS augmentation: a corpus's own training transcripts spoken by many synthetic voices
# ---------------------------------------------------------------------------------------------------------------

# eSpeak reads a lone "a" as the article (a schwa); every other single letter it reads as the letter's name.
_LETTER_SPELLINGS = {"a": "eigh"}


def speakable(text: str, spell_letters: bool = False) -> str:
    """What to give eSpeak for a transcript. With spell_letters (AN4-style spelled words, "r o w l e y"), single
    letters are respelled so that eSpeak says their names."""
    if not spell_letters:
        return text
    return " ".join(_LETTER_SPELLINGS.get(w, w) for w in text.split())


def plan_texts(texts: Sequence[str], copies: int, seed: int = 0, spell_letters: bool = False) -> list[UtterancePlan]:
    """`copies` plans per transcript, each in a voice drawn from all of the synthetic corpus's voices."""
    voices = sorted(v for vs in voice_split().values() for v in vs)
    plans = []
    for i, text in enumerate(texts):
        for c in range(copies):
            rng = random.Random(_seed(seed, "tts", i, c))
            k = i * copies + c
            plans.append(
                _jittered(
                    rng,
                    "tts",
                    k,
                    speakable(text, spell_letters),
                    rng.choice(voices),
                    _seed(seed, "tts", k, "audio"),
                    transcript=text,
                )
            )
    return plans


def prepare_tts(
    texts_manifest: str | Path,
    out_dir: str | Path,
    copies: int = 2,
    seed: int = 0,
    spell_letters: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Speak every transcript of `texts_manifest` `copies` times in random synthetic voices (TTS data augmentation:
    more voices and more renditions of the training vocabulary than a small corpus has).

    Writes out_dir/train.jsonl (the synthetic utterances, wavs/tts/*.wav) and out_dir/mixed.jsonl (the manifest's
    own utterances followed by the synthetic ones: the training manifest for a recipe). Cached like `prepare_synth`,
    keyed by the manifest's content. Returns {"train": Path, "mixed": Path}.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    src = Path(texts_manifest)
    real = read_manifest(src)  # names the file and line of anything wrong
    texts = [u.text for u in real if u.text.strip()]
    if not texts:
        raise ValueError(f"{src}: no transcripts to speak")
    out = Path(out_dir)
    manifests = {"train": out / "train.jsonl", "mixed": out / "mixed.jsonl"}
    params = {
        "corpus": "tts",
        "version": VERSION,
        "seed": seed,
        "copies": copies,
        "spell_letters": spell_letters,
        "texts": hashlib.sha256(src.read_bytes()).hexdigest(),
    }
    if is_prepared(out, manifests, params):
        print(f"tts corpus in {out}: already prepared")
        return manifests

    espeak = get_espeak()
    unmark_prepared(out)
    shutil.rmtree(out / "wavs" / "tts", ignore_errors=True)
    plans = plan_texts(texts, copies, seed, spell_letters)
    start, utts = time.perf_counter(), []
    bar = _progress(len(plans), progress)
    for i in range(0, len(plans), _BATCH):
        batch = plans[i : i + _BATCH]
        for plan, wav in zip(batch, render(batch, espeak)):
            path = out / "wavs" / "tts" / f"{plan.name}.wav"
            write_audio(path, wav, SAMPLE_RATE)
            utts.append(Utterance(str(path), wav.size / SAMPLE_RATE, plan.text, {"speaker": "tts:" + plan.voice}))
        bar.update(len(batch))
    bar.close()
    write_manifest(manifests["train"], utts)
    write_manifest(manifests["mixed"], [*real, *utts])
    mark_prepared(out, {**params, "espeak_ng": espeak.version})
    hours = sum(u.duration for u in utts) / 3600
    print(
        f"tts corpus in {out} ({time.perf_counter() - start:.1f} s): {len(utts)} utterances, {hours:.2f} h, "
        f"{len({u.extra['speaker'] for u in utts})} voices, from {len(texts)} transcripts of {src}"
    )
    return manifests


class _NoBar:
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="synthesising", unit="utt", dynamic_ncols=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m asr.data.synth",
        description="Generate the synthetic English speech corpus (eSpeak NG voices; dev/test voices unseen in "
        "training) as 16 kHz wavs and JSONL manifests. Needs: " + INSTALL_HINT,
    )
    ap.add_argument("--out", default="data/synth", help="output folder (default: %(default)s)")
    ap.add_argument("--n-train", type=int, default=3000, help="training utterances (default: %(default)s)")
    ap.add_argument("--n-dev", type=int, default=200, help="dev utterances (default: %(default)s)")
    ap.add_argument("--n-test", type=int, default=300, help="test utterances (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="sentences and jitter (the voice split is fixed)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--list-voices", action="store_true", help="print the voice identities of each split and exit")
    args = ap.parse_args(argv)
    if args.list_voices:
        for split, voices in voice_split().items():
            print(f"{split} ({len(voices)}): {' '.join(voices)}")
        return 0
    try:
        paths = prepare_synth(args.out, args.n_train, args.n_dev, args.n_test, args.seed, not args.no_progress)
    except (ImportError, VoiceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
