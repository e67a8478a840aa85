"""Generation backends: batched chat generation with n samples per prompt.

    from skill_factory.generation import Sampling, make_backend
    with make_backend(cfg.model, model_path) as backend:          # hf or vllm, per model
        result = backend.generate(conversations, Sampling(n=4, temperature=1.0), seeds=seeds)

Importing this package loads no engine: ``hf`` imports torch/transformers and ``vllm``
imports vLLM only when a backend of that kind is made.
"""
from skill_factory.generation.base import (
    Backend,
    Completion,
    GenerationResult,
    Sampling,
    backend_names,
    derive_seed,
    make_backend,
    register_backend,
    truncate_at_stop,
)
from skill_factory.generation.chat import chat_messages, encode_chat, load_tokenizer, render_chat

__all__ = [
    "Backend",
    "Completion",
    "GenerationResult",
    "Sampling",
    "backend_names",
    "chat_messages",
    "derive_seed",
    "encode_chat",
    "load_tokenizer",
    "make_backend",
    "register_backend",
    "render_chat",
    "truncate_at_stop",
]
