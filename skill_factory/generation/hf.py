"""transformers backend: CPU or one GPU, left padding, batches by length, finished rows dropped.

Why it exists: it is the backend of the embedded tiny model and of every test, and a
fallback for machines without vLLM. It runs the transformers model (its forward pass and
``DynamicCache``) in a decoding loop of its own rather than ``model.generate``, for three
reasons:

- **Finished rows leave the batch.** ``generate`` keeps a finished row in the batch until
  the batch's longest row ends. The tiny model's answers are short with a long tail (mean
  ~15 tokens, a few run to the limit), so most of its compute went to finished rows. Here,
  once an eighth of a batch has finished, those rows are cut from the batch and the KV
  cache (``DynamicCache.batch_select_indices``).
- **Per-row seeded sampling.** ``generate`` samples all rows from one global RNG, which
  would tie a completion to its batch mates. Here row ``r`` draws its token at step ``t``
  by inverse-CDF sampling (after temperature and top-p) with the uniform number
  ``uniform(seed_r, t)`` (SplitMix64). A completion then depends only on its prompt and
  seed, not on batching, sharding or resume.
- **Only the settings asked for.** A hub model's ``generation_config`` (repetition penalty,
  top-k) never applies: temperature, top-p, max tokens and stop strings are all there is,
  as with vLLM's explicit ``SamplingParams``.

Batches by length: all (prompt, sample) rows are sorted by prompt length (longest first,
so a memory problem shows at once) and cut into batches of ``model.generation_batch_size``
rows, padded on the left so every row's next token sits in the last column.

One thread for small models on CPU: a model under ``SMALL_MODEL_PARAMS`` parameters has
matmuls too small to gain from intra-op threads, and on a shared 2-core machine a second
thread made the embedded tiny model's sampling 10-50x *slower* (measured: ~150 vs ~7,000
tokens/s while another job trained). Generation then runs on one torch thread (restored
afterwards) unless ``OMP_NUM_THREADS`` says otherwise.

    backend = HFBackend("path/to/model", cfg.model)
    backend.generate(conversations, Sampling(n=4, temperature=1.0, max_new_tokens=64))
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

from skill_factory.errors import SkillFactoryError
from skill_factory.generation.base import (
    Backend,
    Completion,
    ProgressFn,
    Sampling,
    derive_seed,
    truncate_at_stop,
)

log = logging.getLogger(__name__)

SMALL_MODEL_PARAMS = 20_000_000
_MASK64 = (1 << 64) - 1
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def uniform(seed: int, step: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, step)."""
    return (splitmix64(splitmix64(seed) ^ step) >> 11) / float(1 << 53)


def uniforms(seeds: list[int], steps: int):
    """``uniform(seed, step)`` for every seed and step < ``steps``, vectorised: (rows, steps)."""
    import numpy as np

    def mix(x):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    with np.errstate(over="ignore"):
        x = mix(np.array(seeds, dtype=np.uint64))[:, None] ^ np.arange(steps, dtype=np.uint64)[None, :]
        return (mix(x) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sample_next(logits, u, temperature: float, top_p: float):
    """Next token per row: inverse-CDF draw with uniform ``u[r]`` from the tempered, top-p
    filtered distribution of ``logits[r]``; greedy (argmax) when temperature is 0."""
    import torch

    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # drop a token when the tokens ranked above it already reach top_p
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        drop[:, 0] = False
        probs = probs.scatter(1, order, sorted_probs.masked_fill(drop, 0.0))
    cdf = probs.cumsum(dim=-1)
    u = u.to(dtype=cdf.dtype, device=cdf.device)
    # right=True: a zero-probability token (flat cdf) can never be picked
    token = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
    return token.clamp_(max=logits.shape[-1] - 1)


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model_path: str, model_cfg: Any, device: Optional[str] = None):
        super().__init__(model_path, model_cfg)
        import torch
        from transformers import AutoModelForCausalLM

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = _DTYPES.get(model_cfg.dtype, "auto")
        try:
            model = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=dtype, trust_remote_code=bool(model_cfg.trust_remote_code))
        except (OSError, ValueError) as exc:
            raise SkillFactoryError(f"model.path: cannot load a causal LM from '{model_path}' "
                                    f"({str(exc).splitlines()[0]})") from exc
        self.model = model.to(self.device).eval()
        self.batch_size = max(1, int(model_cfg.generation_batch_size))
        tok = self.tokenizer
        eos = set()
        for source in (tok.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(int(e) for e in source)
        if not eos:
            raise SkillFactoryError(f"model.path: '{model_path}' defines no end-of-sequence token")
        self.eos_ids = sorted(eos)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0]
        small = sum(p.numel() for p in self.model.parameters()) < SMALL_MODEL_PARAMS
        self.single_thread = self.device == "cpu" and small and not os.environ.get("OMP_NUM_THREADS")
        self._stops: dict = {}
        self._logits_to_keep = True

    def _generate(self, prompts: list[list[int]], sampling: Sampling, seeds: list[int],
                  on_progress: Optional[ProgressFn]) -> list[list[Completion]]:
        import torch

        threads = torch.get_num_threads()
        if self.single_thread:
            torch.set_num_threads(1)
        try:
            return self._generate_batches(prompts, sampling, seeds, on_progress)
        finally:
            torch.set_num_threads(threads)

    def _generate_batches(self, prompts: list[list[int]], sampling: Sampling, seeds: list[int],
                          on_progress: Optional[ProgressFn]) -> list[list[Completion]]:
        rows = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)]
        # longest prompts first; stable, so a prompt's samples stay together
        order = sorted(range(len(rows)), key=lambda r: -len(prompts[rows[r][0]]))
        out: list[list[Optional[Completion]]] = [[None] * sampling.n for _ in prompts]
        for start in range(0, len(order), self.batch_size):
            batch = [rows[r] for r in order[start:start + self.batch_size]]
            decoded = self._decode([prompts[i] for i, _ in batch],
                                   [derive_seed(seeds[i], j) for i, j in batch], sampling)
            tokens = 0
            for (i, j), (ids, ended) in zip(batch, decoded):
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                text, stopped = truncate_at_stop(text, sampling.stop)
                out[i][j] = Completion(text, len(ids), "stop" if ended or stopped else "length")
                tokens += len(ids)
            if on_progress is not None:
                on_progress(len(batch), tokens)
        return out  # type: ignore[return-value]

    def _decode(self, prompts: list[list[int]], row_seeds: list[int], sampling: Sampling):
        """Generated token ids of each row and whether it ended (end of sequence or stop)."""
        import torch
        from transformers import DynamicCache

        dev, size = self.device, len(prompts)
        width = max(len(p) for p in prompts)
        ids = torch.full((size, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        position = (mask.cumsum(-1) - 1).clamp_(min=0)
        table = (torch.from_numpy(uniforms(row_seeds, sampling.max_new_tokens))
                 if sampling.temperature > 0 else torch.zeros((size, sampling.max_new_tokens)))
        eos = torch.tensor(self.eos_ids, device=dev)
        stop = self._stop_criteria(sampling.stop)
        tokens: list[list[int]] = [[] for _ in range(size)]
        ended = [False] * size
        rows = torch.arange(size)  # batch position -> row
        live = torch.ones(size, dtype=torch.bool)  # rows still generating (finished ones wait to be cut)
        history = torch.empty((size, 0), dtype=torch.long, device=dev)  # for stop strings only
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            out = self._prefill(ids, mask, position, cache)
            next_position = position[:, -1] + 1
            for step in range(sampling.max_new_tokens):
                nxt = sample_next(out.logits[:, -1, :], table[rows, step], sampling.temperature, sampling.top_p)
                done = torch.isin(nxt, eos)
                if stop is not None:
                    history = torch.cat([history, nxt[:, None]], dim=1)
                    done |= stop(history, None).to(dev)
                done = done.cpu() & live
                for r, t in zip(rows[live].tolist(), nxt.cpu()[live].tolist()):
                    tokens[r].append(t)
                for r in rows[done].tolist():
                    ended[r] = True
                live &= ~done
                if not live.any() or step + 1 == sampling.max_new_tokens:
                    break
                if (~live).sum() * 8 >= len(live):  # an eighth has finished: cut them from the batch
                    keep = live.nonzero().squeeze(1)
                    keep_dev = keep.to(dev)
                    cache.batch_select_indices(keep_dev)
                    rows, live = rows[keep], live[keep]
                    mask, next_position, nxt = mask[keep_dev], next_position[keep_dev], nxt[keep_dev]
                    if stop is not None:
                        history = history[keep_dev]
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                out = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_position[:, None],
                                 past_key_values=cache, use_cache=True)
                next_position = next_position + 1
        return list(zip(tokens, ended))

    def _prefill(self, ids, mask, position, cache):
        """The prompt pass; only the last position's logits are computed where the model
        allows it (a 150k-token vocabulary over a whole prompt batch would not fit)."""
        kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=cache,
                      use_cache=True)
        if self._logits_to_keep:
            try:
                return self.model(**kwargs, logits_to_keep=1)
            except TypeError:  # a remote-code model without the argument
                self._logits_to_keep = False
        return self.model(**kwargs)

    def _stop_criteria(self, stop: tuple[str, ...]):
        if not stop:
            return None
        if stop not in self._stops:
            from transformers import StopStringCriteria

            self._stops[stop] = StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(stop))
        return self._stops[stop]

    def close(self) -> None:
        self.model = None
