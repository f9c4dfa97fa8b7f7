"""Audio without torch: any file soundfile reads -> mono float32 waveform, as asr.audio.load_audio does.

    load_audio(path, sample_rate) -> np.ndarray (samples,) float32 in [-1, 1] at `sample_rate`
    load_audio(path, sample_rate, offset=1.5, duration=2.0) -> only that stretch
    resample(wav (..., n), orig, new) -> (..., ceil(n * new / orig)) float32, torchaudio's default windowed sinc

Same checks and messages as asr/audio.py: headerless .raw is 16 kHz big-endian int16; implausible header rates,
NaN/infinite samples, magnitudes over 1e6 and awkward resampling ratios are refused with AudioError naming the file;
samples are decoded in blocks so a corrupt header cannot allocate what the file does not hold.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import soundfile as sf

# Headerless PCM (CMU AN4's .raw files): soundfile needs the format spelled out.
RAW_FORMATS = {".raw": dict(samplerate=16000, channels=1, subtype="PCM_16", endian="BIG", format="RAW")}

# Limits that tell a corrupt header or garbage samples from a recording (the same as asr/audio.py's):
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
MAX_RESAMPLE_RATIO = 1 << 24  # orig * new of the reduced ratio: the sinc kernel holds ~orig * new taps
MAX_ABS_SAMPLE = 1e6
READ_BLOCK_SAMPLES = 1 << 22  # samples decoded per soundfile call (16 MB of float32)
RESAMPLE_CHUNK = 1 << 20  # window elements per matmul: bounds the float64 temporaries for a long file

LOWPASS_WIDTH = 6  # torchaudio's defaults: zero crossings of the sinc kept each side ...
ROLLOFF = 0.99  # ... and the cutoff as a fraction of the lower Nyquist rate


class AudioError(RuntimeError):
    """An audio file could not be read or is unusable; the message names the file."""


def audio_info(path: str | Path) -> tuple[int, int]:
    """(frames, sample_rate) from the file header, without decoding the samples."""
    path = Path(path)
    raw = RAW_FORMATS.get(path.suffix.lower())
    try:
        if raw is not None:
            return path.stat().st_size // 2 // raw["channels"], raw["samplerate"]
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types; all mean "unusable"
        raise AudioError(f"{path}: cannot read audio header ({_reason(e)})") from None
    _check_sample_rate(path, info.samplerate)
    return info.frames, info.samplerate


def _check_sample_rate(path: Path, sr: int) -> None:
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{path}: implausible sample rate {sr} Hz in the header (expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; "
            "a corrupt file?)"
        )


def _check_stretch(path: Path, offset: float, duration: float | None) -> None:
    bad_offset = not (math.isfinite(offset) and offset >= 0)
    if bad_offset or (duration is not None and not (math.isfinite(duration) and duration > 0)):
        raise AudioError(f"{path}: invalid stretch (offset {offset}, duration {duration})")


def read_audio(path: str | Path, offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file, or `duration` seconds of it from `offset`: (samples, channels) float32 and its sample rate."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    _check_stretch(path, offset, duration)
    try:
        raw = RAW_FORMATS.get(path.suffix.lower()) or {}
        with sf.SoundFile(str(path), **raw) as f:
            sr = f.samplerate
            _check_sample_rate(path, sr)
            start = int(round(offset * sr))
            if start and start >= f.frames:
                raise AudioError(f"{path}: offset {offset:g} s is past the end ({f.frames / sr:.2f} s)")
            if start:
                f.seek(start)
            frames = f.frames - start if duration is None else min(int(round(duration * sr)), f.frames - start)
            data = _read_frames(f, frames)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: cannot decode audio ({_reason(e)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    peak = np.abs(data).max()
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(
            f"{path}: audio holds samples of magnitude {peak:.3g} (float audio is "
            f"nominally in [-1, 1]; over {MAX_ABS_SAMPLE:g} it is garbage, a corrupt file?)"
        )
    return data, sr


def _read_frames(f: sf.SoundFile, frames: int) -> np.ndarray:
    """At most `frames` frames as (frames, channels) float32, a block at a time: memory grows with what the file
    really holds, not with what a (possibly corrupt) header declares; a short block is the real end."""
    per_block = max(1, READ_BLOCK_SAMPLES // f.channels)
    blocks = []
    while frames > 0:
        want = min(per_block, frames)
        block = f.read(want, dtype="float32", always_2d=True)
        blocks.append(block)
        frames -= block.shape[0]
        if block.shape[0] < want:
            break
    return np.concatenate(blocks) if blocks else np.zeros((0, f.channels), dtype=np.float32)


def to_mono(data: np.ndarray) -> np.ndarray:
    """(samples, channels) -> (samples,) by averaging channels."""
    return data.mean(axis=1) if data.ndim == 2 else data


def load_audio(
    path: str | Path, sample_rate: int = 16000, offset: float = 0.0, duration: float | None = None
) -> np.ndarray:
    """Read, downmix and resample: (samples,) float32 at `sample_rate`; offset/duration (s) select a stretch."""
    data, sr = read_audio(path, offset, duration)
    _check_resample_ratio(Path(path), sr, sample_rate)
    return resample(np.ascontiguousarray(to_mono(data)), sr, sample_rate)


def _reduced(orig_sr: int, new_sr: int) -> tuple[int, int]:
    g = math.gcd(int(orig_sr), int(new_sr))
    return int(orig_sr) // g, int(new_sr) // g


def _check_resample_ratio(path: Path, sr: int, sample_rate: int) -> None:
    """Refuse a rate whose exact ratio would need a huge sinc kernel (a corrupt header like 44101 Hz)."""
    orig, new = _reduced(sr, sample_rate)
    if orig * new > MAX_RESAMPLE_RATIO:
        raise AudioError(
            f"{path}: cannot resample {sr} Hz to {sample_rate} Hz (the exact ratio {orig}:{new} is too "
            "awkward; a corrupt header? else convert the file first, e.g. sox in.wav -r 16000 out.wav)"
        )


@functools.lru_cache(maxsize=16)
def sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """The windowed-sinc kernel for a coprime orig -> new: (taps, new) float64, taps = 2 * width + orig, and width.

    Output sample j of each block of `new` reads input taps i = -width .. width + orig - 1 around the block's first
    input sample; its weight is sinc at the distance (i / orig - j / new) in units of the cutoff, tapered by a hann
    window over +-LOWPASS_WIDTH zero crossings and scaled by cutoff / orig (unit gain at DC)."""
    cutoff = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_WIDTH * orig / cutoff)
    taps = np.arange(-width, width + orig) / orig  # (taps,) input positions, in input periods of the block
    phase = np.arange(0, -new, -1)[:, None] / new  # (new, 1) minus each output's position
    t = np.clip((taps + phase) * cutoff, -LOWPASS_WIDTH, LOWPASS_WIDTH)  # (new, taps) distance in zero crossings
    window = np.cos(t * math.pi / (2 * LOWPASS_WIDTH)) ** 2
    kernel = np.sinc(t) * window * (cutoff / orig)  # np.sinc(t) = sin(pi t) / (pi t), 1 at 0
    return np.ascontiguousarray(kernel.T), width


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling along the last axis: (..., n) -> (..., ceil(n * new / orig)) float32, matching
    torchaudio.functional.resample's default (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99)."""
    x = np.asarray(wav, dtype=np.float32)
    if orig_sr == new_sr:
        return x
    orig, new = _reduced(orig_sr, new_sr)
    if orig * new > MAX_RESAMPLE_RATIO:
        raise ValueError(f"resample: the exact ratio {orig}:{new} of {orig_sr} -> {new_sr} Hz is too awkward")
    kernel, width = sinc_kernel(orig, new)  # (taps, new)
    n = x.shape[-1]
    lead = x.shape[:-1]
    rows = x.reshape(-1, n).astype(np.float64)  # (rows, n)
    # Zero padding of `width` before and `width + orig` after gives one block of `new` outputs per `orig` inputs.
    padded = np.pad(rows, ((0, 0), (width, width + orig)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[0], axis=1)[:, ::orig]  # (rows, w, taps)
    step = max(1, RESAMPLE_CHUNK // kernel.shape[0])
    blocks = [windows[:, i : i + step] @ kernel for i in range(0, windows.shape[1], step)]  # (rows, w_i, new)
    out = np.concatenate(blocks, axis=1).reshape(rows.shape[0], -1)[:, : math.ceil(new * n / orig)]
    return out.reshape(*lead, -1).astype(np.float32)


def _reason(e: Exception) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg.replace("\n", " ")
