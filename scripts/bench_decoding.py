"""Decoding speed: batched, cached beam search vs a reference without the KV cache and without batching.

    python scripts/bench_decoding.py --model exp/fsdd/model.pt --manifest data/fsdd/test.jsonl --beam-size 10

Both decoders run on the same model and the same encoder outputs with the same scoring rules (joint CTC/attention
with the model's CTC weight, pre-beam, length normalisation, stopping rule). The reference decodes one utterance at a
time and, at every step, re-runs the decoder over each hypothesis's whole prefix, as a straightforward
implementation does. The script checks that both give the same hypotheses, prints real-time factors (decode wall
time / audio duration) and the speed-up, and the WER of greedy and beam search.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.audio import load_audio  # noqa: E402
from asr.data.manifest import read_manifest  # noqa: E402
from asr.decoding import decode  # noqa: E402
from asr.decoding.ctc import CTCPrefixScorer  # noqa: E402
from asr.decoding.search import max_output_lengths  # noqa: E402
from asr.metrics import error_rates  # noqa: E402
from asr.recognizer import load_model  # noqa: E402


@torch.no_grad()
def reference_beam_search(network, memory, length, ctc_logp, sos, eos, blank, banned, k, ctc_weight, lp, ratio):
    """One utterance; no KV cache (the full prefix is re-decoded every step); hypotheses one by one."""
    max_len = int(max_output_lengths(length.view(1), ratio))
    mem = memory[None, : int(length)]
    lengths = length.view(1)
    scorer = CTCPrefixScorer(ctc_logp[None], lengths, blank, eos) if ctc_weight > 0 else None
    beams = [([sos], 0.0, scorer.initial_state() if scorer else None)]  # (tokens, score, ctc state)
    finished = []
    for t in range(max_len):
        cands = []  # (score, beam index, token, ctc state of the extension)
        for b, (seq, score, state) in enumerate(beams):
            logits, _ = network.decode(torch.tensor([seq]), mem, lengths)  # the whole prefix, every step
            logp = logits[0, -1].float().log_softmax(-1)
            logp[list(banned)] = float("-inf")
            if max_len <= t + 1:
                logp = torch.where(torch.arange(logp.numel()) == eos, logp, torch.tensor(float("-inf")))
            if scorer is None:
                for tok in range(logp.numel()):
                    cands.append((score + float(logp[tok]), b, tok, None))
                continue
            width = min(logp.numel(), int(1.5 * k) + 1)
            att, cand = logp.topk(width)
            psi, r = scorer.score(state, cand[None])
            for j in range(width):
                if not torch.isfinite(att[j]):
                    continue
                delta = float(psi[0, j] - state.score[0]) if torch.isfinite(state.score[0]) else float("-inf")
                joint = (1 - ctc_weight) * float(att[j]) + ctc_weight * delta
                new_state = CTCPrefixScorer.advance(r, psi, torch.tensor([0]), torch.tensor([j]), cand[j : j + 1])
                cands.append((score + joint, b, int(cand[j]), new_state))
        cands.sort(key=lambda c: -c[0])
        top = cands[: 2 * k]
        for rank, (score, b, tok, _) in enumerate(top[:k]):
            if tok == eos and score > float("-inf"):
                seq = beams[b][0][1:]
                finished.append((seq, score, score / (len(seq) + 1) ** lp))
        beams = [(beams[b][0] + [tok], score, st) for score, b, tok, st in top if tok != eos][:k]
        best_open = max(s for _, s, _ in beams) / (t + 2) ** lp if beams else float("-inf")
        if sum(f[2] >= best_open for f in finished) >= 1 or max_len <= t + 1 or not beams:
            break
    finished.sort(key=lambda f: -f[2])
    return finished[0][0] if finished else []


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--beam-size", type=int, default=10)
    p.add_argument("--ctc-weight", type=float, default=None, help="default: the model's decode config")
    p.add_argument("--limit", type=int, default=0, help="decode only the first N utterances (0 = all)")
    p.add_argument("--reference-limit", type=int, default=60, help="utterances for the slow reference (0 = all)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = load_model(args.model)
    tok = rec.tokenizer
    beam = rec.options(beam_size=args.beam_size, ctc_weight=args.ctc_weight)
    greedy = rec.options(decoder="greedy")
    utts = read_manifest(args.manifest)
    if args.limit:
        utts = utts[: args.limit]
    sr = rec.cfg.features.sample_rate
    wavs = [load_audio(u.audio_filepath, sr) for u in utts]
    audio_s = sum(w.numel() for w in wavs) / sr
    refs = [u.text for u in utts]
    print(
        f"{len(utts)} utterances, {audio_s:.0f} s of audio, beam {beam.beam_size}, CTC weight {beam.ctc_weight:g}, "
        f"threads {torch.get_num_threads()}"
    )

    # The toolkit's decoders, end to end from waveforms (features + encoder included), batched.
    for name, options in (("greedy", greedy), (f"beam {args.beam_size}", beam)):
        rec.transcribe(wavs[:8], options, sample_rate=sr, cut_at_pauses=False)  # warm-up
        start = time.perf_counter()
        hyps = [t.text for t in rec.transcribe(wavs, options, sample_rate=sr, cut_at_pauses=False)]
        elapsed = time.perf_counter() - start
        print(f"{name:>10}: RTF {elapsed / audio_s:.4f}  WER {error_rates(refs, hyps).wer:.2f}%")

    # Reference vs batched+cached beam search on the same encoder outputs (search time only).
    n_ref = len(utts) if args.reference_limit == 0 else min(args.reference_limit, len(utts))
    sub = sorted(wavs[:n_ref], key=lambda w: w.numel())  # batches of similar length, as the toolkit decodes
    sub_audio = sum(w.numel() for w in sub) / sr
    banned = (tok.blank, tok.pad, tok.sos)
    batch_size = rec.cfg.decode.batch_size
    fast_s = slow_s = 0.0
    same = 0
    for b in range(0, n_ref, batch_size):
        encoded = rec.encode(sub[b : b + batch_size])
        start = time.perf_counter()
        fast = decode(rec.network, encoded, beam, tok)
        fast_s += time.perf_counter() - start
        start = time.perf_counter()
        slow = [
            reference_beam_search(
                rec.network,
                encoded.memory[i],
                encoded.lengths[i],
                None if encoded.ctc_log_probs is None else encoded.ctc_log_probs[i],
                tok.sos,
                tok.eos,
                tok.blank,
                banned,
                beam.beam_size,
                beam.ctc_weight,
                beam.length_penalty,
                beam.max_len_ratio,
            )
            for i in range(encoded.batch)
        ]
        slow_s += time.perf_counter() - start
        same += sum(f.tokens == s for f, s in zip(fast, slow))
    print(
        f"search only, {n_ref} utterances ({sub_audio:.0f} s): batched+cached RTF {fast_s / sub_audio:.4f}, "
        f"reference RTF {slow_s / sub_audio:.4f}, speed-up {slow_s / fast_s:.1f}x, "
        f"identical hypotheses {same}/{n_ref}"
    )


if __name__ == "__main__":
    main()
