"""Speech-Transformer ASR toolkit.

The package reads like the pipeline it implements, one module per stage:

    audio.py     file -> waveform (samples,) at the model's rate
    features.py  waveform batch -> fbank (batch, frames, 80) or MFCC (batch, frames, 39), CMVN, SpecAugment
    text.py      text <-> token ids (characters + <pad>/<sos>/<eos>/<unk>/<blank>)
    data/        manifests, corpus preparers, dataset, length-bucketed batches, Lightning DataModule
    model/       conv subsampling, Transformer encoder/decoder, losses
    training.py  LightningModule: teacher forcing, label smoothing, Noam schedule, checkpoints
    decoding/    DecodingOptions; greedy and beam search over scorers (attention + KV cache, CTC, LM), CTC, NAT
    lm.py        token LM for shallow fusion
    recognizer.py  a trained model: options(), encode(audio) -> Encoded, decode(encoded) -> [Hypothesis],
                 transcribe(files/arrays) -> [Transcript]; model file save/load
    transcribe.py  `asr transcribe`'s inputs (files, folders, segmented manifests) and outputs
    serve/       `asr serve`: OpenAI-compatible HTTP API + web page; a queue batches concurrent requests' chunks
    metrics.py   WER/CER via jiwer; benchmark/ runs, scores and reports models x sets x decoders
    cli.py       argument parsing: `asr prepare | train | transcribe | evaluate | benchmark | train-lm | serve`
"""

__version__ = "0.1.0"


def load_model(path, device: str = "cpu"):
    """Load a self-contained model file (see `asr.recognizer`) ready to `.transcribe(...)`."""
    from asr.recognizer import load_model as _load

    return _load(path, device=device)
