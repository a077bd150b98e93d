"""The sequence CVAE calls its language models without attention masks (issue 20: no host sync per step). The
padding is on the right and the models are causal, so every term must be what the masked calls give; on a GPU a
training step must not synchronise with the host."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from cvae_core.data.strategies import StrategyTask, Vocab, make_split
from cvae_core.sequence.lm import BaseLMConfig, answer_nll, batch, build_base_lm
from cvae_core.sequence.model import SeqCVAE, SeqCVAEConfig
from cvae_core.sequence.runs import load_seq_run, splits, task_from
from cvae_core.sequence.train import fit_seq

TINY = BaseLMConfig(n_embd=16, n_layer=2, n_head=2, n_positions=40)
XS, YS = ["3142", "907", "55120", "8"], ["1234", "709", "02155", "8"]  # lengths differ: rows are padded


def _masked_pooled(model, lm, seqs):
    """The mean of the last hidden states over the real tokens, with the attention mask given (the reference)."""
    ids, attn, _ = batch(seqs, model.vocab)
    h = lm(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states[-1]
    w = attn.unsqueeze(-1).to(h.dtype)
    return (h * w).sum(1) / w.sum(1)


def _check_against_masked(model, xs, ys):
    seqs = [model.vocab.encode(x, y) for x, y in zip(xs, ys, strict=True)]
    prompts = [model.vocab.encode(x)[: model.vocab.x_length(x)] for x in xs]
    ids, attn, ans = batch(seqs, model.vocab)
    assert (attn == 0).any(), "the batch must hold padding for this test to mean something"
    with torch.no_grad():
        for lm, s in ((model.inference_lm, seqs), (model.router_lm, prompts)):
            torch.testing.assert_close(model._pooled(lm, s), _masked_pooled(model, lm, s), rtol=1e-5, atol=1e-6)
        values = torch.arange(model.config.K) if model.config.latent == "discrete" else \
            torch.randn(3, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
        z = values.repeat(len(xs)) if values.dim() == 1 else values.repeat(len(xs), 1)
        rows_x = [x for x in xs for _ in range(len(values))]
        rows_y = [y for y in ys for _ in range(len(values))]
        r_ids, r_attn, r_ans = batch([model.vocab.encode(x, y) for x, y in zip(rows_x, rows_y, strict=True)],
                                     model.vocab)
        want = answer_nll(model.decoder_lm, r_ids, r_attn, r_ans,
                          inputs_embeds=model.slot_embeds(r_ids, model.slot_vectors(z)))
        torch.testing.assert_close(model.decoder_nll(rows_x, rows_y, z), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("latent", ["discrete", "continuous"])
@pytest.mark.parametrize("decoder", ["lora", "full", "frozen"])
def test_unmasked_terms_equal_the_masked_ones_on_a_small_model(latent, decoder):
    base = build_base_lm(Vocab(), TINY, seed=0)
    torch.manual_seed(0)
    model = SeqCVAE(base, Vocab(), SeqCVAEConfig(latent=latent, decoder=decoder)).eval()
    _check_against_masked(model, XS, YS)


def test_unmasked_terms_equal_the_masked_ones_on_the_shipped_run():
    model, _, info = load_seq_run("checkpoints/strategies/discrete")
    train, _ = splits(task_from(info.get("task")), info.get("data"))
    _check_against_masked(model, train.x[:6], train.y[:6])


@pytest.mark.gpu
@pytest.mark.parametrize("latent", ["discrete", "continuous"])
def test_a_training_step_on_cuda_does_not_sync_with_the_host(latent):
    """torch.cuda's sync debug mode warns at every synchronising call (an .item(), a nonzero, a device-to-host copy),
    naming the Python line that made it. Over 6 steps only the one log tick at the end may (it reads its numbers on
    the host on purpose, in cvae_core/train.py); a sync in the model, transformers or the optimiser fails."""
    base = build_base_lm(Vocab(), TINY, seed=0).to("cuda")
    torch.manual_seed(0)
    model = SeqCVAE(base, Vocab(), SeqCVAEConfig(latent=latent)).to("cuda")
    train, _ = make_split(StrategyTask(strategies=("reverse", "rotate"), min_len=3, max_len=4), 64, 8, seed=0)
    fit_seq(model, train, steps=2, batch_size=8, log_every=2, warm_start=0.5)  # warm-up: lazy inits may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_seq(model, train, steps=6, batch_size=8, log_every=1000, warm_start=0.5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = ["/".join(Path(w.filename).parts[-2:]) + f":{w.lineno}" for w in caught
             if "synchroniz" in str(w.message).lower()]
    assert syncs, "the log tick at the end syncs: the debug mode must have seen it, or this test checks nothing"
    assert all(s.startswith("cvae_core/train.py:") for s in syncs), f"a step synchronised with the host at {syncs}"
