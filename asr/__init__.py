"""Speech-Transformer ASR toolkit.

The package reads like the pipeline it implements, one module per stage:

    audio.py     file -> waveform (samples,) at the model's rate
    features.py  waveform batch -> fbank (batch, frames, 80) or MFCC (batch, frames, 39), CMVN, SpecAugment
    text.py      text <-> token ids (characters + <pad>/<sos>/<eos>/<unk>/<blank>)
    data/        manifests, corpus preparers, dataset, length-bucketed batches, Lightning DataModule
    model/       conv subsampling, Transformer encoder/decoder, losses
    training.py  LightningModule: teacher forcing, label smoothing, Noam schedule, checkpoints
    decoding/    greedy and beam search (KV cache, batched)
    metrics.py   WER/CER via jiwer
    recognizer.py  a trained model + everything needed to transcribe; model file save/load
    cli.py       `asr train | transcribe | evaluate | prepare | demo`
"""

__version__ = "0.1.0"


def load_model(path, device: str = "cpu"):
    """Load a self-contained model file (see `asr.recognizer`) ready to `.transcribe(...)`."""
    from asr.recognizer import load_model as _load

    return _load(path, device=device)
