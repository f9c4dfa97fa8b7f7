import torch

from asr.config import ModelConfig
from asr.decoding import beam_search, greedy_search
from asr.model import SpeechTransformer, ctc_loss, guided_attention_loss
from asr.model.losses import guided_attention_penalty
from asr.model.transformer import DecoderCache


def _model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=12,
        n_features=40,
        d_model=32,
        n_heads=4,
        d_ff=64,
        n_encoder_layers=2,
        n_decoder_layers=2,
        conv_channels=8,
        dropout=0.0,
        **kw,
    )
    return SpeechTransformer(cfg).eval()


def _inputs():
    feats = torch.randn(3, 120, 40)
    lengths = torch.tensor([120, 90, 33])
    tokens = torch.randint(5, 12, (3, 6))
    token_lengths = torch.tensor([6, 4, 2])
    return feats, lengths, tokens, token_lengths


def test_shapes_and_subsampling():
    m = _model()
    feats, lengths, tokens, token_lengths = _inputs()
    logits, enc_lengths, weights = m(feats, lengths, tokens, token_lengths, need_weights=True)
    assert logits.shape == (3, 6, 12)
    assert enc_lengths.tolist() == [((n - 1) // 2 - 1) // 2 for n in lengths.tolist()]  # x4 in time
    assert len(weights) == 2 and weights[0].shape == (3, 4, 6, int(enc_lengths.max()))
    # Rows of the cross-attention sum to one and put no weight on padded encoder frames.
    assert torch.allclose(weights[0].sum(-1), torch.ones(3, 4, 6), atol=1e-5)
    assert weights[0][2, :, :, int(enc_lengths[2]) :].abs().max() == 0


def test_padding_does_not_change_outputs():
    m = _model()
    feats, lengths, tokens, token_lengths = _inputs()
    logits, _, _ = m(feats, lengths, tokens, token_lengths)
    alone, _, _ = m(feats[2:3, :33], lengths[2:3], tokens[2:3, :2], token_lengths[2:3])
    assert torch.allclose(alone[0], logits[2, :2], atol=1e-5)


def test_incremental_decoding_matches_full_pass():
    m = _model()
    feats, lengths, tokens, token_lengths = _inputs()
    memory, memory_lengths = m.encode(feats, lengths)
    full, _ = m.decode(tokens, memory, memory_lengths)
    cache = m.new_cache()
    steps = [m.step(tokens[:, t], memory, memory_lengths, cache) for t in range(6)]
    assert cache.offset == 6
    assert torch.allclose(torch.stack(steps, 1), full.log_softmax(-1), atol=1e-5)
    # Reordering rows moves only the self-attention entries; the rest of the cache follows the rows.
    cache = m.new_cache()
    m.step(tokens[:, 0], memory, memory_lengths, cache)
    cache.reorder(torch.tensor([2, 2, 2]))  # as beam search does within one utterance's beams
    for module, (k, _) in cache.kv.items():
        if module in cache.cross:
            assert not torch.equal(k[0], k[2])
        else:
            assert torch.equal(k[0], k[2])


def test_beam_one_equals_greedy_and_beams_are_ordered():
    m = _model()
    feats, lengths, _, _ = _inputs()
    memory, memory_lengths = m.encode(feats, lengths)
    greedy = greedy_search(m, memory, memory_lengths, sos=2, eos=3, max_len_ratio=0.5)
    beam1 = beam_search(m, memory, memory_lengths, sos=2, eos=3, beam_size=1, max_len_ratio=0.5)
    assert [h[0].tokens for h in beam1] == [h.tokens for h in greedy]
    for b, g in zip(beam1, greedy):  # both report the same log-probability for the same hypothesis
        assert abs(b[0].score - g.score) < 1e-4
    nbest = beam_search(m, memory, memory_lengths, sos=2, eos=3, beam_size=4, max_len_ratio=0.5, nbest=3)
    for hyps, n in zip(nbest, memory_lengths.tolist()):
        assert 1 <= len(hyps) <= 3
        scores = [h.score / (len(h.tokens) + 1) for h in hyps]  # ranked by length-normalised score
        assert scores == sorted(scores, reverse=True)
        assert all(len(h.tokens) < max(2, int(0.5 * n)) for h in hyps)  # the length limit holds
        assert all(3 not in h.tokens for h in hyps)


def test_beam_search_finds_the_best_sequence_of_a_known_model():
    """A decoder whose next-token distribution we control: greedy takes a tempting first token that leads to a
    poor continuation; the beam must find the sequence with the higher total probability."""

    class Scripted:
        # vocab: 0..3 specials (2 = sos, 3 = eos), 4 = "x", 5 = "y"
        def new_cache(self):
            return DecoderCache()

        def step(self, last, memory, lengths, cache):
            n, offset = last.size(0), cache.offset
            cache.offset += 1
            logp = torch.full((n, 6), -20.0)
            for i, tok in enumerate(last.tolist()):
                if offset == 0:
                    logp[i, 4], logp[i, 5] = torch.log(torch.tensor(0.6)), torch.log(torch.tensor(0.4))
                elif tok == 4:  # after "x": uncertain
                    logp[i, 3], logp[i, 4], logp[i, 5] = (torch.log(torch.tensor(v)) for v in (0.34, 0.33, 0.33))
                elif tok == 5 and offset == 1:  # after "y": certain end
                    logp[i, 3] = 0.0
                else:
                    logp[i, 3] = 0.0
            return logp

    memory, lengths = torch.zeros(1, 20, 4), torch.tensor([20])
    assert [h.tokens for h in greedy_search(Scripted(), memory, lengths, sos=2, eos=3)] == [[4]]
    best = beam_search(Scripted(), memory, lengths, sos=2, eos=3, beam_size=2, length_penalty=0.0)[0][0]
    assert best.tokens == [5] and abs(best.score - float(torch.log(torch.tensor(0.4)))) < 1e-4


def test_losses():
    m = _model()
    feats, lengths, tokens, token_lengths = _inputs()
    memory, memory_lengths = m.encode(feats, lengths)
    log_probs = m.ctc_log_probs(memory)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]), atol=1e-5)
    loss = ctc_loss(log_probs, memory_lengths, tokens, token_lengths, blank=0)
    assert torch.isfinite(loss) and loss > 0
    # Guided attention: a diagonal alignment costs ~nothing, an anti-diagonal one a lot; padding is ignored.
    n, t = 5, 20
    w = guided_attention_penalty(torch.tensor([n]), torch.tensor([t]), n + 2, t + 3, sigma=0.2)
    assert w.shape == (1, n + 2, t + 3) and w[0, n:].abs().max() == 0 and w[0, :, t:].abs().max() == 0
    diag = torch.zeros(1, 1, n, t)
    anti = torch.zeros(1, 1, n, t)
    for i in range(n):
        diag[0, 0, i, int((i + 0.5) / n * t)] = 1
        anti[0, 0, i, int((n - i - 0.5) / n * t)] = 1
    lo = guided_attention_loss(diag, torch.tensor([n]), torch.tensor([t]), sigma=0.2)
    hi = guided_attention_loss(anti, torch.tensor([n]), torch.tensor([t]), sigma=0.2)
    assert lo < 0.05 < 0.5 < hi


def test_batched_beam_search_equals_each_utterance_alone_and_folded_cross_attention_is_exact():
    """Beams of one utterance attend to its encoder keys/values together (one row per utterance in the cache);
    utterances that finish leave the batch. Neither may change a hypothesis or its score."""
    from asr.model.layers import MultiHeadAttention

    m = _model()
    feats, lengths, _, _ = _inputs()
    memory, memory_lengths = m.encode(feats, lengths)
    together = beam_search(m, memory, memory_lengths, sos=2, eos=3, beam_size=4, max_len_ratio=0.5, nbest=2)
    for i in range(3):
        alone = beam_search(
            m, memory[i : i + 1, : memory_lengths[i]], memory_lengths[i : i + 1], sos=2, eos=3, beam_size=4,
            max_len_ratio=0.5, nbest=2,
        )[0]  # fmt: skip
        assert [h.tokens for h in together[i]] == [h.tokens for h in alone]
        assert all(abs(a.score - b.score) < 1e-4 for a, b in zip(together[i], alone))
    attn = MultiHeadAttention(32, 4, 0.0).eval()
    x, source = torch.randn(6, 1, 32), torch.randn(2, 7, 32)  # 2 utterances x 3 beams
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]
    folded, w = attn(x, source, mask, kv_cache={}, cross=True, need_weights=True)
    repeated, w_rep = attn(x, source.repeat_interleave(3, 0), mask.repeat_interleave(3, 0), need_weights=True)
    assert torch.allclose(folded, repeated, atol=1e-6) and torch.allclose(w, w_rep, atol=1e-6)


def test_dropout_zeroes_a_share_p_and_scales_the_rest():
    from asr.model.layers import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.25).train()
    x = torch.rand(200, 300) + 1.0  # no zeros of its own
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.01
    assert torch.allclose(y[kept], x[kept] / 0.75)
    x.requires_grad_(True)
    drop(x).sum().backward()  # the gradient is the same mask and scale
    g = x.grad
    assert torch.all((g == 0) | torch.isclose(g, torch.tensor(1 / 0.75)))
    assert torch.equal(drop.eval()(x), x)
