"""Decoding: encoder output -> hypotheses.

options.py  DecodingOptions (what to decode with, validated once), named setups (`beam10:ctc_weight=0.5`)
decode.py   decode(network, Encoded, options, tokenizer, lm) -> [Hypothesis]: picks the search for the decoder
search.py   greedy search and batched beam search over weighted scorers (attention decoder, CTC prefix, LM)
ctc.py      CTC best path and the CTC prefix scorer
nat.py      non-autoregressive decoders on the NAT head (nat-length, nat-max, mask-ctc)
"""

from asr.decoding.ctc import CTCPrefixScorer, ctc_greedy
from asr.decoding.decode import Encoded, decode
from asr.decoding.options import DECODERS, DecodingOptions, OptionsError
from asr.decoding.search import Hypothesis, beam_search, greedy_search

__all__ = [
    "DECODERS",
    "CTCPrefixScorer",
    "DecodingOptions",
    "Encoded",
    "Hypothesis",
    "OptionsError",
    "beam_search",
    "ctc_greedy",
    "decode",
    "greedy_search",
]
