"""The base autoregressive model p_theta(y | x) of the sequence CVAE (SPEC section 6): a small decoder-only transformer
built with Hugging Face ``transformers`` (a GPT-2 configuration sized for a CPU, randomly initialised and trained in
the project; nothing is downloaded), or any local causal-LM folder in the ``transformers`` format.

Token sequences follow the template of ``data.strategies.Vocab``; the loss is the negative log-likelihood of the
answer tokens only (those after ``<y>``: the digits, ``</y>`` and ``<eos>``), summed per sequence. Token ids stay
int64.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from cvae_core.data.strategies import StrategySplit, Vocab
from cvae_core.errors import CheckpointError, ConfigError
from cvae_core.integrity import check_hash, pickle_note, recorded_hashes, safetensors_problem


@dataclass(frozen=True)
class BaseLMConfig:
    n_embd: int = 64  # model width
    n_layer: int = 2
    n_head: int = 4
    n_positions: int = 64  # longest sequence (the template of an 8-digit x and y with a latent is 25 tokens)

    def __post_init__(self) -> None:
        if min(self.n_embd, self.n_layer, self.n_head, self.n_positions) < 1 or self.n_embd % self.n_head:
            raise ConfigError(f"the base model needs positive sizes and n_embd divisible by n_head (got n_embd="
                              f"{self.n_embd}, n_head={self.n_head}, n_layer={self.n_layer})")


def build_base_lm(vocab: Vocab, config: BaseLMConfig = BaseLMConfig(), seed: int = 0):
    """A randomly initialised GPT-2 style causal LM over `vocab` (seeded; torch's global stream is left as it was)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=len(vocab), n_positions=config.n_positions, n_embd=config.n_embd,
                     n_layer=config.n_layer, n_head=config.n_head, bos_token_id=vocab.ids["<bos>"],
                     eos_token_id=vocab.ids["<eos>"], pad_token_id=vocab.pad, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(cfg)


SAFE_WEIGHTS, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"  # transformers' names


def base_weight_files(path: Path) -> list[Path]:
    """The safetensors files of a transformers folder: model.safetensors, or the shards its index names. A folder
    with neither (only pytorch_model.bin, say: a pickle) is one CheckpointError line; pickles are never read."""
    if (path / SAFE_WEIGHTS).is_file():
        return [path / SAFE_WEIGHTS]
    if (path / SAFE_INDEX).is_file():
        try:
            shards = sorted(set(json.loads((path / SAFE_INDEX).read_text())["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path / SAFE_INDEX} is not a safetensors index ({type(e).__name__}: {e})"
                                  ) from None
        return [path / s for s in shards]
    raise CheckpointError(f"{path} has no {SAFE_WEIGHTS}{pickle_note(path)}")


def load_base_lm(path: str | Path, vocab: Vocab, record: str | None = None):
    """A causal LM from a local folder in the ``transformers`` format (``save_pretrained``); never downloads and
    never unpickles: its weights are read from safetensors only (``use_safetensors=True``, so a pytorch_model.bin
    beside them is ignored), each checked first for truncation and, when the folder's JSON file `record` holds a
    ``sha256`` record, against its hash. Its vocabulary must hold the task's tokens (same ids). Each failure is a
    one-line CheckpointError."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr: errors stay one line
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a transformers model folder (no config.json)")
    hashes = recorded_hashes(path / record) if record else None
    for wpath in base_weight_files(path):
        if not wpath.is_file():
            raise CheckpointError(f"{path} has no {wpath.name} (named by {SAFE_INDEX})")
        problem = safetensors_problem(wpath)
        if problem:
            raise CheckpointError(f"{wpath} is corrupt or not a safetensors file ({problem})")
        check_hash(wpath, hashes, path / str(record))
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: transformers cannot load it ({str(e).splitlines()[0] if str(e) else e})"
                              ) from None
    size = model.get_input_embeddings().num_embeddings
    if size < len(vocab):
        raise CheckpointError(f"{path} has {size} token embeddings; the task needs {len(vocab)}")
    return model


def batch(seqs: list[list[int]], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, L) int64, the attention mask (B, L) and the answer mask (B, L): True on the tokens after
    <y> (the ones the loss scores)."""
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), vocab.pad, dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
    attn = ids != vocab.pad
    after_y = torch.cumsum((ids == vocab.ids["<y>"]).long(), dim=1) > 0
    answer = after_y & (ids != vocab.ids["<y>"]) & attn
    return ids, attn.long(), answer


def answer_nll(model, ids: torch.Tensor, attn: torch.Tensor, answer: torch.Tensor,
               inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """-log p(answer tokens | the tokens before them), summed per sequence: (B,). Position t predicts token t+1."""
    out = model(input_ids=None if inputs_embeds is not None else ids, inputs_embeds=inputs_embeds,
                attention_mask=attn)
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)  # (B, L-1, V)
    tok = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, L-1): log p of each next token
    return -(tok * answer[:, 1:]).sum(1)


def train_base_lm(model, split: StrategySplit, vocab: Vocab, *, steps: int = 2000, batch_size: int = 64,
                  lr: float = 3e-3, seed: int = 0, device: str = "cpu", log_every: int = 200, progress=None) -> list:
    """Maximum likelihood on the answers of (x, y) pairs without a latent. Returns [(step, mean nats per answer)]."""
    model.to(device).train()
    seqs = [vocab.encode(x, y) for x, y in zip(split.x, split.y, strict=True)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    curve, acc = [], 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(len(seqs), (batch_size,), generator=gen)
        ids, attn, ans = (t.to(device) for t in batch([seqs[i] for i in idx], vocab))
        loss = answer_nll(model, ids, attn, ans).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        acc += loss.detach()
        if step % log_every == 0 or step == steps:
            n = log_every if step % log_every == 0 else step % log_every
            curve.append((step, float(acc) / n))
            acc = 0.0
            if progress:
                progress(step / steps, f"step {step}: {curve[-1][1]:.3f} nats per answer")
    model.eval()
    return curve


@torch.no_grad()
def sample_answers(model, vocab: Vocab, xs: list[str], *, greedy: bool = False, seed: int = 0,
                   max_new: int | None = None) -> list[str | None]:
    """One answer per input, decoded token by token (greedy, or sampled at temperature 1 with a seeded generator);
    None where the model writes no well-formed answer. The prompt is the template up to <y>. Inputs of one length
    decode together as a batch (their prompts need no padding)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    stop = torch.tensor([vocab.ids["</y>"], vocab.ids["<eos>"]], device=device)
    out: list[str | None] = [None] * len(xs)
    by_len: dict[int, list[int]] = {}
    for i, x in enumerate(xs):
        by_len.setdefault(len(x), []).append(i)
    for n, rows in sorted(by_len.items()):
        ids = torch.tensor([vocab.encode(xs[i]) for i in rows], dtype=torch.int64, device=device)
        done = torch.zeros(len(rows), dtype=torch.bool, device=device)
        for _ in range(max_new or n + 2):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1].float()
            nxt = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)[:, 0]
            nxt = torch.where(done, vocab.pad, nxt)  # finished rows only pad
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= torch.isin(nxt, stop)
            if bool(done.all()):
                break
        for i, row in zip(rows, ids.tolist(), strict=True):
            out[i] = vocab.answer(row)
    return out


def nats_per_answer(model, split: StrategySplit, vocab: Vocab, batch_size: int = 256) -> float:
    """Mean answer NLL (nats per sequence) of a split under the model."""
    device = next(model.parameters()).device
    seqs = [vocab.encode(x, y) for x, y in zip(split.x, split.y, strict=True)]
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            ids, attn, ans = (t.to(device) for t in batch(seqs[i : i + batch_size], vocab))
            total += float(answer_nll(model, ids, attn, ans).sum())
    return total / len(seqs) if seqs else math.nan
