"""Decoding: encoder output -> token ids. Greedy (fast path) and batched beam search, both with a KV cache."""

from asr.decoding.search import Hypothesis, beam_search, greedy_search

__all__ = ["Hypothesis", "beam_search", "greedy_search"]
