"""Model: conv subsampling -> Transformer encoder -> autoregressive decoder; losses."""

from asr.model.layers import padding_mask
from asr.model.losses import ctc_loss, guided_attention_loss, label_smoothed_nll
from asr.model.transformer import Decoder, Encoder, SpeechTransformer

__all__ = [
    "SpeechTransformer",
    "Encoder",
    "Decoder",
    "padding_mask",
    "label_smoothed_nll",
    "ctc_loss",
    "guided_attention_loss",
]
