"""Transcripts with times and scores, and the output formats of `asr transcribe`.

    Transcript(text, segments=[TimedText(start, end, text, score, token_times, words), ...], duration)
    render(transcript, fmt, path) -> str    fmt: txt | json | srt | vtt

Times are seconds from the start of the recording. A segment's score is its hypothesis log-probability (<eos>
included) under the decoder's own scoring (asr.decoding.options.DecodingOptions): attention alone for greedy
decoding, the weighted attention + CTC prefix + LM sum for beam search, the best path for CTC, the NAT head for the
parallel decoders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

FORMATS = ("txt", "json", "srt", "vtt")


@dataclass
class Word:
    text: str
    start: float  # seconds: its first token's start
    end: float  # its last token's end


@dataclass
class TimedText:
    start: float  # seconds
    end: float
    text: str
    score: float  # log-probability of the hypothesis
    token_times: list[tuple[float, float]] | None = None  # (start, end) s of each token, where the decoder has them
    words: list[Word] | None = None  # the words with times, where the decoder has token times
    tokens: list[int] | None = None  # the hypothesis' token ids


@dataclass
class Transcript:
    text: str  # the segments' texts joined by spaces; "" when no speech was found
    segments: list[TimedText] = field(default_factory=list)
    duration: float = 0.0  # seconds of audio

    @classmethod
    def from_segments(cls, segments: list[TimedText], duration: float) -> "Transcript":
        return cls(" ".join(s.text.strip() for s in segments if s.text.strip()), segments, duration)


def to_dict(t: Transcript, path: str) -> dict:
    return {
        "audio_filepath": path,
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [_segment_dict(s) for s in t.segments],
    }


def _segment_dict(s: TimedText) -> dict:
    d = {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text, "score": round(s.score, 4)}
    if s.words is not None:
        d["words"] = [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in s.words]
    return d


def timestamp(seconds: float, decimal: str = ",") -> str:
    """Seconds -> HH:MM:SS,mmm (SubRip) or, with decimal=".", HH:MM:SS.mmm (WebVTT)."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def to_srt(t: Transcript) -> str:
    cues = [s for s in t.segments if s.text.strip()]  # a cue with no text is not a subtitle
    return "".join(
        f"{i}\n{timestamp(s.start)} --> {timestamp(s.end)}\n{s.text.strip()}\n\n" for i, s in enumerate(cues, 1)
    )


def to_vtt(t: Transcript) -> str:
    cues = [s for s in t.segments if s.text.strip()]
    return "WEBVTT\n\n" + "".join(
        f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text.strip()}\n\n" for s in cues
    )


def render(t: Transcript, fmt: str, path: str) -> str:
    """One input's transcript as a document in `fmt` (txt: the text alone; json: one object, one line)."""
    if fmt == "txt":
        return t.text + "\n"
    if fmt == "json":
        return json.dumps(to_dict(t, path), ensure_ascii=False) + "\n"
    if fmt == "srt":
        return to_srt(t)
    if fmt == "vtt":
        return to_vtt(t)
    raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
