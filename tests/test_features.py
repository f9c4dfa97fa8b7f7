"""asr.features against references: torchaudio's Kaldi fbank, librosa MFCC/deltas, numpy statistics.

Signals are generated here (chirps + tones + noise at 16 kHz, fixed seeds); nothing is downloaded.
"""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from asr.config import FeatureConfig, SpecAugmentConfig
from asr.features import (
    MFCC,
    CMVNStats,
    Fbank,
    GlobalCMVN,
    SpecAugment,
    chunk_pieces,
    frame_counts,
    kaldi_mel_matrix,
    make_frontend,
    vtlp_positions,
)

SR = 16000
LENGTHS = [400, 561, 8000, 16123, 40000]  # 1 frame, 2 frames (just), 0.5 s, ~1 s, 2.5 s


def signal(n: int, seed: int = 0) -> np.ndarray:
    """Chirp 150 Hz -> 2.6 kHz + 1234 Hz tone + noise + a DC offset (so DC removal matters), float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    sweep = 2500 * t / max(t[-1], 1e-3)
    x = 0.3 * np.sin(2 * np.pi * (150 + sweep) * t) + 0.2 * np.sin(2 * np.pi * 1234 * t)
    return (x + 0.02 * rng.standard_normal(n) + 0.05).astype(np.float32)


def batch_of(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (batch, samples) batch of signals with different seeds, and their lengths."""
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = torch.from_numpy(signal(n, seed=i))
    return wav, torch.tensor(lengths)


# ---------------------------------------------------------------------------------------------------------------
# Fbank vs Kaldi (torchaudio.compliance.kaldi.fbank)

# Both sides compute in float32, and float32 FFT rounding is relative to a frame's total energy, so bands with
# little energy (the lowest bands after pre-emphasis and DC removal) carry relative errors up to a few 1e-3.
# Measured max |ours - torchaudio| on log values over these signals: 2.5e-3 (povey, pre-emphasis + DC removal),
# 1.2-1.6e-3 (hamming/hann with them), 3-4e-4 without; torchaudio differs from its own float64 run by up to
# 1.4e-3, so this is float32 noise. The mean |diff| (measured <= 1.1e-5) is the sharper check.
KALDI_MAX_TOL = 1e-2
KALDI_MEAN_TOL = 5e-5
# In float64 the remaining difference is torchaudio's mel matrix, built in float32 (weights off by ~1e-5, which
# is ~1e-4 relative on the few-bin low filters): measured up to 3.5e-4. Any algorithmic slip (framing,
# pre-emphasis, DC removal, window) would show up at 1e-2 or more.
KALDI_FLOAT64_TOL = 2e-3


def _kaldi_fbank(x: torch.Tensor, window: str, preemphasis: float, remove_dc: bool) -> torch.Tensor:
    return kaldi.fbank(
        x[None],
        num_mel_bins=80,
        dither=0.0,
        window_type={"hann": "hanning"}.get(window, window),
        preemphasis_coefficient=preemphasis,
        remove_dc_offset=remove_dc,
    )  # (frames, 80)


@pytest.mark.parametrize(
    "window, preemphasis, remove_dc",
    [
        ("povey", 0.97, True),  # Kaldi's defaults
        ("povey", 0.0, False),
        ("hann", 0.97, True),
        ("hann", 0.0, False),
        ("hamming", 0.97, True),  # hamming's window[0] != 0: exercises the sample-0 pre-emphasis patch
        ("hamming", 0.5, False),
    ],
)
def test_fbank_matches_kaldi(window: str, preemphasis: float, remove_dc: bool) -> None:
    cfg = FeatureConfig(window=window, preemphasis=preemphasis, remove_dc=remove_dc)
    fbank = Fbank(cfg).eval()
    for i, n in enumerate(LENGTHS):
        x = torch.from_numpy(signal(n, seed=i))
        ref = _kaldi_fbank(x, window, preemphasis, remove_dc)
        ours, frames = fbank(x[None], torch.tensor([n]))
        assert ours.shape == (1, ref.shape[0], 80) and frames.tolist() == [ref.shape[0]]
        diff = (ours[0] - ref).abs()
        assert diff.max() < KALDI_MAX_TOL, (n, diff.max().item())
        assert diff.mean() < KALDI_MEAN_TOL, (n, diff.mean().item())


@pytest.mark.parametrize("window", ["povey", "hamming"])
def test_fbank_matches_kaldi_in_float64(window: str) -> None:
    """The same computation in float64 on both sides: what is left is torchaudio's float32 mel matrix."""
    fbank = Fbank(FeatureConfig(window=window)).eval().double()
    for i, n in enumerate(LENGTHS):
        x = torch.from_numpy(signal(n, seed=i)).double()
        ours, _ = fbank(x[None], torch.tensor([n]))
        assert ours.dtype == torch.float64
        assert (ours[0] - _kaldi_fbank(x, window, 0.97, True)).abs().max() < KALDI_FLOAT64_TOL


def test_fbank_other_mel_settings_match_kaldi() -> None:
    """n_mels, low_freq and a negative high_freq (offset from Nyquist) reach the filterbank as Kaldi reads them."""
    cfg = FeatureConfig(n_mels=40, low_freq=64.0, high_freq=-400.0)
    x = torch.from_numpy(signal(16000))
    ref = kaldi.fbank(x[None], num_mel_bins=40, low_freq=64.0, high_freq=-400.0, dither=0.0)
    ours, _ = Fbank(cfg).eval()(x[None], torch.tensor([16000]))
    assert ours.shape[-1] == 40
    assert (ours[0] - ref).abs().max() < KALDI_MAX_TOL  # measured 1.7e-4


def test_mel_matrix_matches_kaldi() -> None:
    ref, _ = kaldi.get_mel_banks(80, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)  # (80, 256), float32
    ours = kaldi_mel_matrix(80, 512, 16000, 20.0, 0.0)  # (257, 80), float64
    assert ours.shape == (257, 80) and ours[-1].abs().max() == 0  # no weight on the Nyquist bin
    # torchaudio subtracts mel values (~2000) in float32: measured 1.4e-5 off on weights in [0, 1].
    assert (ours[:-1].T - ref.double()).abs().max() < 1e-4


def test_frame_counts_snip_edges() -> None:
    lengths = torch.tensor([0, 399, 400, 559, 560, 16000])
    assert frame_counts(lengths, 400, 160).tolist() == [0, 0, 1, 1, 2, 98]


# ---------------------------------------------------------------------------------------------------------------
# MFCC vs librosa

# librosa differs from Kaldi-style MFCCs in ways bridged here, in the test, not in asr.features:
#  * dB: librosa uses 10 log10 (power_to_db, ref=1, top_db=None), we use ln; the DCT is linear, so every
#    cepstrum differs by the constant factor 10 / ln 10.
#  * framing: with center=False and win_length < n_fft librosa centres the window inside each n_fft frame, so the
#    signal is padded by (n_fft - win) // 2 samples in front (and behind, for the same frame count).
#  * window: librosa's 'hann' is periodic; we pass it Kaldi's symmetric hann as an array.
#  * mel: librosa's htk triangles are linear in Hz, ours (Kaldi's) linear in mel; same band edges.
# Our config: hann window, no pre-emphasis, no DC removal, so that librosa's STFT sees the same frames.
DB_PER_NEPER = 10 / np.log(10)
PAD = (512 - 400) // 2
# Exact path (librosa STFT + DCT on our mel matrix): measured max |diff| 7e-5 dB on cepstra of magnitude up to
# ~70 dB, i.e. float32 rounding.
LIBROSA_OWN_MEL_TOL_DB = 1e-3
# End to end with librosa's htk mel (triangles linear in Hz): measured up to 0.048 dB, against cepstra with a
# spread (std over time) of 7-18 dB; 0.2 dB leaves room while still catching any real framing/scale/DCT error.
LIBROSA_HTK_MEL_TOL_DB = 0.2
# Deltas are the same regression on the same numbers: float32 rounding only (measured 4.8e-7).
DELTA_TOL = 1e-5


def _librosa_stft_power(x: np.ndarray) -> np.ndarray:
    window = torch.hann_window(400, periodic=False, dtype=torch.float64).numpy()
    y = np.pad(x, (PAD, PAD))
    return np.abs(librosa.stft(y, n_fft=512, hop_length=160, win_length=400, window=window, center=False)) ** 2


def test_mfcc_matches_librosa() -> None:
    cfg = FeatureConfig(kind="mfcc", window="hann", preemphasis=0.0, remove_dc=False)
    mfcc = MFCC(cfg).eval()
    mel = kaldi_mel_matrix(80, 512, SR, cfg.low_freq, cfg.high_freq).numpy()  # (257, 80)
    for i, n in enumerate([8000, 16000, 23456]):
        x = signal(n, seed=i)
        ours, frames = mfcc(torch.from_numpy(x)[None], torch.tensor([n]))
        assert ours.shape == (1, frames.item(), 39)
        ceps, d1, d2 = (ours[0, :, k * 13 : (k + 1) * 13].numpy().T for k in range(3))  # (13, frames) each

        # 1) librosa's STFT and DCT, our mel matrix: the framing, scale and DCT must agree to rounding.
        power = _librosa_stft_power(x)  # (257, frames)
        assert power.shape[1] == frames.item()
        log_mel = librosa.power_to_db(mel.T @ power, ref=1.0, amin=1e-10, top_db=None)
        ref = librosa.feature.mfcc(S=log_mel, n_mfcc=13, dct_type=2, norm="ortho", lifter=0)
        assert np.abs(ref - DB_PER_NEPER * ceps).max() < LIBROSA_OWN_MEL_TOL_DB

        # 2) librosa end to end with its own htk mel filterbank (linear-in-Hz triangles): looser.
        htk_mel = librosa.feature.melspectrogram(
            S=power, sr=SR, n_fft=512, n_mels=80, fmin=cfg.low_freq, fmax=SR / 2, htk=True, norm=None
        )
        ref_htk = librosa.feature.mfcc(
            S=librosa.power_to_db(htk_mel, ref=1.0, amin=1e-10, top_db=None), n_mfcc=13, norm="ortho", lifter=0
        )
        assert np.abs(ref_htk - DB_PER_NEPER * ceps).max() < LIBROSA_HTK_MEL_TOL_DB

        # 3) deltas and delta-deltas (regression applied twice, edges replicated) on our own cepstra.
        ref_d1 = librosa.feature.delta(ceps, width=2 * cfg.delta_window + 1, mode="nearest", axis=-1)
        ref_d2 = librosa.feature.delta(ref_d1, width=2 * cfg.delta_window + 1, mode="nearest", axis=-1)
        assert np.abs(ref_d1 - d1).max() < DELTA_TOL
        assert np.abs(ref_d2 - d2).max() < DELTA_TOL


# ---------------------------------------------------------------------------------------------------------------
# Padded batches


@pytest.mark.parametrize("kind", ["fbank", "mfcc"])
def test_padded_batch_equals_single_utterances(kind: str) -> None:
    lengths = [16123, 300, 5000, 8000, 561]  # includes one shorter than a window (0 frames)
    wav, lens = batch_of(lengths)
    frontend = make_frontend(FeatureConfig(kind=kind)).eval()
    feats, frames = frontend(wav, lens)
    assert frames.tolist() == frame_counts(lens, 400, 160).tolist()
    assert feats.shape == (len(lengths), max(frames.tolist()), frontend.dim)
    for i, n in enumerate(lengths):
        alone, alone_frames = frontend(wav[i : i + 1, :n], torch.tensor([n]))
        m = frames[i].item()
        assert alone_frames.item() == m
        # Same frames, same numbers: for MFCC this covers the deltas at the end of a shorter utterance, which must
        # replicate its own last frame instead of reading the padding.
        torch.testing.assert_close(feats[i, :m], alone[0], rtol=0, atol=1e-5)
        assert not feats[i, m:].any()  # frames past the utterance's own length are exactly 0


def test_chunking_does_not_change_results() -> None:
    """Utterances split across chunks (and chunks spanning utterances) give the same frames."""
    wav, lens = batch_of([16000, 7000, 12345])
    fbank = Fbank(FeatureConfig()).eval()
    whole, _ = fbank(wav, lens)
    fbank.chunk_frames = 37
    chunked, _ = fbank(wav, lens)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    assert chunk_pieces([3, 4], 5) == [[(0, 0, 3), (1, 0, 2)], [(1, 2, 4)]]
    assert chunk_pieces([0, 5, 0], 5) == [[(1, 0, 5)]]


@pytest.mark.parametrize("kind", ["fbank", "mfcc"])
def test_all_utterances_too_short(kind: str) -> None:
    wav, lens = batch_of([100, 399])
    frontend = make_frontend(FeatureConfig(kind=kind))
    feats, frames = frontend(wav, lens)
    assert feats.shape == (2, 0, frontend.dim) and frames.tolist() == [0, 0]


def test_length_beyond_batch_is_an_error() -> None:
    wav, _ = batch_of([1000])
    with pytest.raises(ValueError, match="exceeds the padded batch"):
        Fbank(FeatureConfig())(wav, torch.tensor([1001]))


def test_dither_only_in_training() -> None:
    cfg = FeatureConfig(dither=1.0)
    fbank = Fbank(cfg)
    wav, lens = batch_of([8000])
    clean, _ = fbank.eval()(wav, lens)
    torch.testing.assert_close(clean, Fbank(FeatureConfig()).eval()(wav, lens)[0])
    fbank.train()
    torch.manual_seed(1)
    a, _ = fbank(wav, lens)
    torch.manual_seed(1)
    b, _ = fbank(wav, lens)
    assert torch.equal(a, b)  # reproducible from torch's global seed
    assert 0 < (a - clean).abs().max() < 0.1  # one int16 step of noise barely moves a loud signal


def tone(freq: float, n: int = 8000) -> torch.Tensor:
    return torch.sin(2 * torch.pi * freq * torch.arange(n) / SR)[None].float()  # (1, n)


def test_vtlp_moves_the_spectrum_by_the_factor() -> None:
    fbank = Fbank(FeatureConfig()).eval()
    lens = torch.tensor([8000])
    plain, _ = fbank(tone(1000.0), lens)
    same, _ = fbank(tone(1000.0), lens, warp=torch.tensor([1.0]))
    torch.testing.assert_close(same, plain, atol=1e-3, rtol=0)
    for a in (0.9, 1.1):
        # Channel i reads the spectrum at a * (its centre): a 1 kHz tone lands where a (1000 / a) Hz tone lands.
        warped, _ = fbank(tone(1000.0), lens, warp=torch.tensor([a]))
        target, _ = fbank(tone(1000.0 / a), lens)
        peak, want = warped[0].mean(0).argmax(), target[0].mean(0).argmax()
        assert int(peak) == int(want) and int(peak) != int(plain[0].mean(0).argmax())
    pos = vtlp_positions(torch.tensor([0.8, 1.0, 1.2]), FeatureConfig())
    assert torch.all(pos[:, 1:] >= pos[:, :-1])  # a monotonic warp of the axis
    torch.testing.assert_close(pos[1], torch.arange(80).float(), atol=1e-3, rtol=0)
    assert torch.all(pos[:, -1] > 77)  # near the band edge the warp returns to the identity


def test_vtlp_per_utterance_keeps_padding_and_reaches_mfcc() -> None:
    wav, lens = batch_of([8000, 16123])
    fbank = Fbank(FeatureConfig()).eval()
    plain, counts = fbank(wav, lens)
    warped, counts2 = fbank(wav, lens, warp=torch.tensor([1.0, 1.1]))
    assert torch.equal(counts, counts2) and warped.shape == plain.shape
    torch.testing.assert_close(warped[0], plain[0], atol=1e-3, rtol=0)  # factor 1: unchanged
    assert (warped[1] - plain[1]).abs().max() > 0.5
    assert torch.all(warped[0, int(counts[0]) :] == 0)  # padding frames stay 0
    mfcc = MFCC(FeatureConfig(kind="mfcc")).eval()
    ceps, _ = mfcc(wav, lens, warp=torch.tensor([1.1, 1.1]))
    assert (ceps - mfcc(wav, lens)[0]).abs().max() > 0.1


def test_make_frontend() -> None:
    assert isinstance(make_frontend(FeatureConfig(kind="fbank")), Fbank)
    mfcc = make_frontend(FeatureConfig(kind="mfcc", n_mfcc=20))
    assert isinstance(mfcc, MFCC) and mfcc.dim == FeatureConfig(kind="mfcc", n_mfcc=20).dim == 60
    with pytest.raises(ValueError, match="unknown feature kind 'plp'"):
        make_frontend(FeatureConfig(kind="plp"))
    with pytest.raises(ValueError, match="unknown window"):
        Fbank(FeatureConfig(window="blackman"))
    assert len(Fbank(FeatureConfig()).state_dict()) == 0  # window and mel matrix are rebuilt, not stored


# ---------------------------------------------------------------------------------------------------------------
# CMVN


def _random_padded_feats(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([50, 17, 33, 1])
    feats = torch.randn(4, 50, 6, generator=g) * torch.arange(1, 7) + torch.arange(6) * 10.0
    feats = feats * (torch.arange(50) < lengths[:, None])[..., None]
    return feats, lengths


def test_cmvn_stats_match_numpy() -> None:
    feats, lengths = _random_padded_feats()
    stats = CMVNStats()
    stats.add(feats[:2], lengths[:2])  # two batches: accumulation across calls
    stats.add(feats[2:], lengths[2:])
    mean, std = stats.mean_std()
    valid = np.concatenate([feats[i, :n].numpy() for i, n in enumerate(lengths.tolist())]).astype(np.float64)
    assert stats.count == valid.shape[0] == 101
    assert mean.dtype == std.dtype == torch.float32
    np.testing.assert_allclose(mean.numpy(), valid.mean(0), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), valid.std(0), rtol=1e-5)


def test_cmvn_std_floor_and_empty() -> None:
    stats = CMVNStats()
    with pytest.raises(ValueError):
        stats.mean_std()
    stats.add(torch.ones(1, 5, 3), torch.tensor([5]))
    _, std = stats.mean_std(floor=1e-3)
    assert torch.equal(std, torch.full((3,), 1e-3))


def test_global_cmvn_normalises_and_keeps_padding_zero() -> None:
    feats, lengths = _random_padded_feats()
    stats = CMVNStats()
    stats.add(feats, lengths)
    cmvn = GlobalCMVN(6)
    cmvn.set_stats(*stats.mean_std())
    out = cmvn(feats, lengths)
    mask = torch.arange(50) < lengths[:, None]
    valid = out[mask].double()
    assert valid.mean(0).abs().max() < 1e-5
    assert (valid.std(0, unbiased=False) - 1).abs().max() < 1e-5
    assert out[~mask].abs().max() == 0
    state = cmvn.state_dict()  # stats travel with the model file
    assert set(state) == {"mean", "std"} and torch.equal(state["std"], cmvn.std)
    with pytest.raises(ValueError):
        cmvn.set_stats(torch.zeros(5), torch.ones(5))


def test_utterance_cmvn_removes_a_channel_offset() -> None:
    feats, lengths = _random_padded_feats()
    mask = (torch.arange(50) < lengths[:, None])[..., None]
    cmvn = GlobalCMVN(6, utterance_mean=True)
    centred = cmvn.centre(feats, lengths)
    stats = CMVNStats()
    stats.add(centred, lengths)
    cmvn.set_stats(*stats.mean_std())
    assert cmvn.mean.abs().max() < 1e-5  # statistics of mean-removed features
    out = cmvn(feats, lengths)
    for b, n in enumerate(lengths.tolist()):  # every utterance has mean 0 in every dimension
        assert out[b, :n].mean(0).abs().max() < 1e-5
    # A fixed colouring (microphone, room) is a per-dimension offset in the log-mel domain: it disappears.
    coloured = (feats + torch.linspace(-3, 3, 6)) * mask
    torch.testing.assert_close(cmvn(coloured, lengths), out)
    assert out[~mask.expand_as(out)].abs().max() == 0
    torch.testing.assert_close(GlobalCMVN(6).centre(feats, lengths), feats)  # global mode: no per-utterance step


# ---------------------------------------------------------------------------------------------------------------
# SpecAugment


def _spec_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([400, 120, 37, 1])
    feats = torch.randn(4, 400, 80, generator=g).abs() + 0.1  # no zeros inside the valid region
    return feats * (torch.arange(400) < lengths[:, None])[..., None], lengths


def test_specaugment_identity_in_eval_or_disabled() -> None:
    feats, lengths = _spec_batch()
    aug = SpecAugment(SpecAugmentConfig(), 80).eval()
    assert torch.equal(aug(feats, lengths), feats)
    off = SpecAugment(SpecAugmentConfig(enabled=False), 80).train()
    assert torch.equal(off(feats, lengths), feats)


def test_specaugment_masks_within_limits() -> None:
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=0.05, time_width_max=40)
    feats, lengths = _spec_batch()
    aug = SpecAugment(cfg, 80).train()
    valid = (torch.arange(400) < lengths[:, None])[..., None].expand_as(feats)
    torch.manual_seed(0)
    saw_freq_mask = saw_time_mask = False
    for _ in range(50):
        out = aug(feats, lengths)
        zeroed = out == 0
        assert torch.equal(out[~zeroed], feats[~zeroed])  # only zeros are introduced
        assert zeroed[~valid].all()  # padding stays zero
        # A frequency column is masked when it is zero over an utterance's whole valid region.
        for i, n in enumerate(lengths.tolist()):
            cols = zeroed[i, :n].all(dim=0)  # (80,)
            rows = zeroed[i, :n].all(dim=1)  # (n,)
            assert cols.sum() <= cfg.freq_masks * cfg.freq_width
            assert rows.sum() <= cfg.time_masks * min(int(cfg.time_width * n), cfg.time_width_max)
            saw_freq_mask |= bool(cols.any())
            saw_time_mask |= bool(rows.any())
    assert saw_freq_mask and saw_time_mask


def test_specaugment_scales_freq_width_and_is_deterministic() -> None:
    assert SpecAugment(SpecAugmentConfig(freq_width=10), 40).freq_width == 5
    assert SpecAugment(SpecAugmentConfig(freq_width=10), 39).freq_width == 5  # MFCC + deltas: round(4.875)
    feats, lengths = _spec_batch()
    aug = SpecAugment(SpecAugmentConfig(), 80).train()
    torch.manual_seed(123)
    a = aug(feats, lengths)
    torch.manual_seed(123)
    b = aug(feats, lengths)
    torch.manual_seed(124)
    c = aug(feats, lengths)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_features_stay_float32_under_autocast() -> None:
    wav, lens = batch_of([8000, 5000])
    mfcc = MFCC(FeatureConfig(kind="mfcc")).eval()
    ref, _ = mfcc(wav, lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = mfcc(wav, lens)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)
