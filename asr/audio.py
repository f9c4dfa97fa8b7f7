"""Audio: any file soundfile reads (wav, flac, ogg, mp3, NIST SPHERE, headerless raw PCM) -> mono float waveform.

    load_audio(path, sample_rate) -> torch.Tensor (samples,) float32 in [-1, 1] at `sample_rate`
    load_audio(path, sample_rate, offset=1.5, duration=2.0) -> only that stretch (Kaldi `segments`)

Integer PCM is scaled to [-1, 1) by soundfile; multi-channel audio is averaged to mono; a different rate is
resampled with torchaudio's windowed-sinc kernel. Every failure raises `AudioError` naming the file, including a
corrupt header (an absurd sample rate) and samples no recording holds (NaN, infinite, |x| > 1e6): they are refused
before they can exhaust memory or overflow the features (tests/test_fuzz.py feeds the reader mutated files).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from asr.outputs import atomic_path

# Headerless PCM (CMU AN4's .raw files): soundfile needs the format spelled out.
RAW_FORMATS = {".raw": dict(samplerate=16000, channels=1, subtype="PCM_16", endian="BIG", format="RAW")}

# Limits that tell a corrupt header or garbage samples from a recording (all found by fuzzing, tests/test_fuzz.py):
MIN_SAMPLE_RATE = 1000  # below: a corrupt header; upsampling from 1 Hz would multiply the samples by 16000
MAX_SAMPLE_RATE = 768000  # above: a corrupt header (768 kHz is the highest rate audio interfaces record at)
MAX_RESAMPLE_RATIO = 1 << 24  # orig * new of the reduced ratio: the sinc kernel holds ~orig * new taps (44101 ->
# 16000 Hz is 44101:16000, a 5.6 GB kernel; 44.1 kHz is 441:160, 76k taps; a real 44056 Hz file is 5507:2000, 11M)
MAX_ABS_SAMPLE = 1e6  # float files are nominally in [-1, 1] (some tools write int16 scale, 32768); a float file
# holding 1e38 is garbage, and averaging two such channels or the power spectrum overflows float32 to inf
READ_BLOCK_SAMPLES = 1 << 22  # samples decoded per soundfile call (16 MB of float32): see _read_frames


class AudioError(RuntimeError):
    """An audio file could not be read or is unusable; the message names the file."""


def audio_info(path: str | Path) -> tuple[int, int]:
    """(frames, sample_rate) from the file header, without decoding the samples."""
    path = Path(path)
    raw = RAW_FORMATS.get(path.suffix.lower())
    try:
        if raw is not None:
            nbytes = path.stat().st_size
            return nbytes // 2 // raw["channels"], raw["samplerate"]
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types; all mean "unusable"
        raise AudioError(f"{path}: cannot read audio header ({_reason(e)})") from None
    _check_sample_rate(path, info.samplerate)
    return info.frames, info.samplerate


def _check_sample_rate(path: Path, sr: int) -> None:
    """A rate no recording has means a corrupt header: refuse it before it sizes a resampling kernel or output."""
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{path}: implausible sample rate {sr} Hz in the header (expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; "
            "a corrupt file?)"
        )


def _check_stretch(path: Path, offset: float, duration: float | None) -> None:
    """offset >= 0 and duration > 0, both finite: inf or NaN would otherwise fail inside int(round(...)) with
    Python's own message."""
    bad_offset = not (math.isfinite(offset) and offset >= 0)
    if bad_offset or (duration is not None and not (math.isfinite(duration) and duration > 0)):
        raise AudioError(f"{path}: invalid stretch (offset {offset}, duration {duration})")


def read_audio(path: str | Path, offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file, or `duration` seconds of it from `offset` seconds: (samples, channels) float32 array and its
    sample rate. Only the requested stretch is decoded (soundfile seek + read), so a segment of a long recording is
    cheap."""
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
    if np.abs(data).max() > MAX_ABS_SAMPLE:
        raise AudioError(
            f"{path}: audio holds samples of magnitude {np.abs(data).max():.3g} (float audio is "
            f"nominally in [-1, 1]; over {MAX_ABS_SAMPLE:g} it is garbage, a corrupt file?)"
        )
    return data, sr


def _read_frames(f: sf.SoundFile, frames: int) -> np.ndarray:
    """At most `frames` frames from the current position as (frames, channels) float32, decoded a block at a time.

    One `f.read(frames)` would allocate every frame the header declares before decoding any: a corrupt FLAC or
    truncated download can declare billions. In blocks, memory grows only with what the file really holds; the loop
    ends at a short block (the real end) or after `frames` (the header's count, so it always ends)."""
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


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """torchaudio's windowed-sinc kernel for orig -> new (coprime), as (taps, new) for a matmul, and its half-width.
    Built in float64 and then cast: torchaudio's float32 build is off by up to 2e-5 at 441:160."""
    r = torchaudio.transforms.Resample(orig, new, dtype=torch.float64)
    return r.kernel[:, 0, :].T.to(dtype).contiguous(), r.width


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling along the last axis: (..., n) -> (..., ceil(n * new_sr / orig_sr)).

    torchaudio.functional.resample's kernel, applied as one matmul over strided windows instead of its strided
    conv1d, which pays for every new input length (oneDNN builds a kernel per shape) -- and in training every
    utterance is a new length. Per utterance on 2 threads that is 2.2-2.7x faster for speed perturbation's 9:10 and
    11:10, 15x for 44.1 -> 16 kHz (scripts/bench_features.py --resample). Windows are taken in chunks so a long
    file never holds more than ~4 MB of them per row at once."""
    if orig_sr == new_sr:
        return wav
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    kernel, width = _sinc_kernel(orig, new, wav.dtype)
    kernel = kernel.to(wav.device)  # (taps, new); a no-op on the CPU
    n = wav.shape[-1]
    windows = torch.nn.functional.pad(wav, (width, width + orig)).unfold(-1, kernel.shape[0], orig)  # (..., w, taps)
    step = max(1, (1 << 20) // kernel.shape[0])
    out = torch.cat([windows[..., i : i + step, :] @ kernel for i in range(0, windows.shape[-2], step)], dim=-2)
    return out.flatten(-2)[..., : math.ceil(new * n / orig)]  # (..., n * new / orig)


def load_audio(
    path: str | Path, sample_rate: int = 16000, offset: float = 0.0, duration: float | None = None
) -> torch.Tensor:
    """Read, downmix and resample: returns (samples,) float32 at `sample_rate`. `offset`/`duration` (seconds) select
    a stretch of the file (a Kaldi segment); the default is the whole file."""
    data, sr = read_audio(path, offset, duration)
    _check_resample_ratio(Path(path), sr, sample_rate)
    wav = torch.from_numpy(np.ascontiguousarray(to_mono(data)))
    return resample(wav, sr, sample_rate)


def _check_resample_ratio(path: Path, sr: int, sample_rate: int) -> None:
    """Refuse a rate whose exact ratio to `sample_rate` would need a huge sinc kernel (see MAX_RESAMPLE_RATIO): a
    header rate like 44101 Hz is corruption, and building its kernel would exhaust memory, not raise."""
    g = math.gcd(int(sr), int(sample_rate))
    if (sr // g) * (sample_rate // g) > MAX_RESAMPLE_RATIO:
        raise AudioError(
            f"{path}: cannot resample {sr} Hz to {sample_rate} Hz (the exact ratio {sr // g}:{sample_rate // g} is too "
            "awkward; a corrupt header? else convert the file first, e.g. sox in.wav -r 16000 out.wav)"
        )


def prepare_array(wav: np.ndarray | torch.Tensor, sr: int, sample_rate: int = 16000) -> torch.Tensor:
    """An in-memory signal (samples,) or (samples, channels); ints are scaled like soundfile does."""
    arr = wav.numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(-np.iinfo(arr.dtype).min)
    arr = to_mono(arr.astype(np.float32, copy=False))
    return resample(torch.from_numpy(np.ascontiguousarray(arr)), sr, sample_rate)


def write_audio(path: str | Path, wav: np.ndarray | torch.Tensor, sample_rate: int) -> None:
    """Write a mono float waveform as 16-bit PCM wav (creating the folder), atomically: a killed `asr prepare` never
    leaves a truncated wav behind. The corpus folders it writes belong to the toolkit, so files are replaced."""
    arr = wav.numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    with atomic_path(path, overwrite=True) as tmp:
        sf.write(str(tmp), np.clip(arr, -1.0, 1.0), sample_rate, subtype="PCM_16")


def _reason(e: Exception) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg.replace("\n", " ")
