"""Decoding: encoder output -> token ids. Greedy (fast path), batched beam search (KV cache, optional joint
CTC/attention scoring), CTC greedy."""

from asr.decoding.ctc import CTCPrefixScorer, ctc_greedy
from asr.decoding.search import Hypothesis, beam_search, greedy_search

__all__ = ["Hypothesis", "beam_search", "greedy_search", "ctc_greedy", "CTCPrefixScorer"]
