"""The generation backend interface: batched chat generation, n samples per prompt.

Why an interface: the method needs the same thing from two very different engines (vLLM's
offline engine on GPUs, transformers ``generate`` on a laptop): "here are chat prompts, give
me n completions of each with these sampling settings, and tell me how many tokens that
took". Stages only ever see this interface, so the backend is a per-model config choice
(``model.backend``) and can be overridden on the command line.

Seeding: every prompt carries its own seed (the caller derives it from what the prompt *is*,
e.g. ``derive_seed(seed, question_id, variant)``), and sample ``j`` of a prompt draws from
``derive_seed(prompt_seed, j)``. So a completion does not depend on which other prompts
share its batch, shard or call: a resumed run, a different shard size or a different batch
size give the same data (up to floating-point ties in the model's logits).

    backend = make_backend(cfg.model, model_path)
    result = backend.generate([[{"role": "user", "content": "2+2?"}]], Sampling(n=4))
    result.completions[0][3].text, result.generated_tokens
"""
from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

from skill_factory.errors import SkillFactoryError

log = logging.getLogger(__name__)

Message = Mapping[str, str]
Conversation = Sequence[Message]
# on_progress(completions_done, tokens_generated): called as batches finish
ProgressFn = Callable[[int, int], None]

SEED_BITS = 63


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from ``parts`` (never Python's salted ``hash``)."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "big") & ((1 << SEED_BITS) - 1)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one ``generate`` call (the same for every prompt of the call)."""

    # completions per prompt
    n: int = 1
    # 0 = greedy
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    # generation stops after the first of these strings; the text keeps it and ends there
    stop: tuple[str, ...] = ()
    # seed used for prompts that get no seed of their own
    seed: int = 0

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))


@dataclass(frozen=True)
class Completion:
    text: str
    # generated tokens, including a final end-of-sequence token
    num_tokens: int
    # "stop" (end of sequence or a stop string) or "length" (hit max_new_tokens)
    finish_reason: str


@dataclass
class GenerationResult:
    # per prompt, its n completions in sample order
    completions: list[list[Completion]]
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` right after the earliest stop string; (text, whether one was found)."""
    best = None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best):
            best = i + len(s)
    return (text, False) if best is None else (text[:best], True)


def prompt_seeds(seeds: Optional[Sequence[int]], count: int, sampling: Sampling) -> list[int]:
    if seeds is None:
        return [derive_seed(sampling.seed, i) for i in range(count)]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} prompts")
    return [int(s) for s in seeds]


class Backend(ABC):
    """A loaded model that turns chat conversations into completions.

    Subclasses load the model in ``__init__`` (engines imported there, never at module
    import) and implement ``_generate`` on already tokenized prompts.
    """

    name: ClassVar[str]

    def __init__(self, model_path: str, model_cfg: Any):
        from skill_factory.generation.chat import load_tokenizer

        self.model_path = model_path
        self.model_cfg = model_cfg
        self.max_length = int(model_cfg.max_length)
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=bool(model_cfg.trust_remote_code))
        # variables of the model's chat template (model.chat_template_kwargs), for every prompt
        self.template_kwargs = dict(model_cfg.chat_template_kwargs)

    def encode(self, conversations: Sequence[Conversation],
               prefixes: Optional[Sequence[str]] = None) -> list[list[int]]:
        from skill_factory.generation.chat import encode_chat

        ids = [encode_chat(self.tokenizer, conv, source=self.model_path, template_kwargs=self.template_kwargs)
               for conv in conversations]
        if prefixes is None:
            return ids
        if len(prefixes) != len(ids):
            raise ValueError(f"got {len(prefixes)} prefixes for {len(ids)} conversations")
        return [p + (self.tokenizer(x, add_special_tokens=False)["input_ids"] if x else [])
                for p, x in zip(ids, prefixes)]

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling, *,
                 seeds: Optional[Sequence[int]] = None,
                 on_progress: Optional[ProgressFn] = None,
                 prefixes: Optional[Sequence[str]] = None) -> GenerationResult:
        """n completions for each conversation (rendered with the model's chat template).

        ``prefixes[i]``, when given, is text the assistant turn of conversation ``i`` already
        starts with: it is tokenized after the rendered prompt and generation continues it;
        completions hold only the new text. Budget forcing (``skill_factory.evaluation``)
        continues a cut response this way, on any backend, since both take token ids.
        """
        start = time.perf_counter()
        prompts = self.encode(conversations, prefixes)
        seeds = prompt_seeds(seeds, len(prompts), sampling)
        for ids in prompts:
            if len(ids) + sampling.max_new_tokens > self.max_length:
                raise SkillFactoryError(
                    f"model.max_length: a prompt of {len(ids)} tokens plus max_new_tokens="
                    f"{sampling.max_new_tokens} exceeds model.max_length={self.max_length}; raise "
                    "model.max_length (if the model allows it) or lower the stage's max_new_tokens")
        if not prompts:
            return GenerationResult([], seconds=time.perf_counter() - start)
        completions = self._generate(prompts, sampling, seeds, on_progress)
        result = GenerationResult(
            completions=completions,
            prompt_tokens=sum(len(p) for p in prompts) * sampling.n,
            generated_tokens=sum(c.num_tokens for row in completions for c in row),
            seconds=time.perf_counter() - start,
        )
        return result

    @abstractmethod
    def _generate(self, prompts: list[list[int]], sampling: Sampling, seeds: list[int],
                  on_progress: Optional[ProgressFn]) -> list[list[Completion]]:
        """Completions for token-id prompts; ``seeds[i]`` seeds prompt ``i``."""

    def close(self) -> None:
        """Release the model (GPU memory); the backend is unusable afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# name -> "module:Class" (imported only when selected) or a factory(model_path, model_cfg)
_BACKENDS: dict[str, Any] = {
    "hf": "skill_factory.generation.hf:HFBackend",
    "vllm": "skill_factory.generation.vllm:VLLMBackend",
}


def backend_names() -> tuple[str, ...]:
    return tuple(sorted(_BACKENDS))


def register_backend(name: str, factory: Any) -> None:
    """Add a backend: ``factory(model_path, model_cfg) -> Backend`` or "module:Class"."""
    _BACKENDS[name] = factory


def make_backend(model_cfg: Any, model_path: str, backend: Optional[str] = None) -> Backend:
    """Load ``model_path`` with the backend named by ``backend`` or ``model_cfg.backend``."""
    import importlib

    name = backend or model_cfg.backend
    entry = _BACKENDS.get(name)
    if entry is None:
        raise SkillFactoryError(f"model.backend: unknown generation backend '{name}'; "
                                f"use one of {', '.join(backend_names())}")
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        entry = getattr(importlib.import_module(module), cls)
    log.info("loading %s with the %s backend", model_path, name)
    return entry(model_path, model_cfg)
