"""Decoding: encoder output -> hypotheses.

options.py  DecodingOptions (what to decode with, validated once), named setups (`beam10:ctc_weight=0.5`)
decode.py   decode(network, Encoded, options, tokenizer, lm) -> [Hypothesis]: picks the search for the decoder
search.py   greedy search and batched beam search over weighted scorers (attention decoder, CTC prefix, LM)
ctc.py      CTC best path and the CTC prefix scorer
nat.py      non-autoregressive decoders on the NAT head (nat-length, nat-max, mask-ctc)
"""

# Resolved on first use (PEP 562), so that `asr.decoding.options`, plain values, imports without torch: the
# torch-free runtime (asr.runtime) takes the same options and their checks from it.
_LAZY = {
    "CTCPrefixScorer": "asr.decoding.ctc",
    "ctc_greedy": "asr.decoding.ctc",
    "Encoded": "asr.decoding.decode",
    "decode": "asr.decoding.decode",
    "DECODERS": "asr.decoding.options",
    "DecodingOptions": "asr.decoding.options",
    "OptionsError": "asr.decoding.options",
    "Hypothesis": "asr.decoding.search",
    "beam_search": "asr.decoding.search",
    "greedy_search": "asr.decoding.search",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'asr.decoding' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


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
