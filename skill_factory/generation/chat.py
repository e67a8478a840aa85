"""Chat prompts: messages from templates, rendered by the model's own chat template.

Why the model's template: the sampled answers and reflections must be what the model says
when prompted the way it is trained and used later (SFT with LLaMA-Factory's template of the
same model family, RL with verl's chat rendering), so prompts are rendered by
``tokenizer.apply_chat_template(..., add_generation_prompt=True)`` and tokenized without
adding special tokens a second time (the template already holds them). The model config's
``chat_template_kwargs`` are passed as template variables: Llama 3.2's template writes
*today's* date (transformers' ``strftime_now``) unless ``date_string`` is given, and SFT
(LLaMA-Factory's ``default_system``) and RL (verl's ``data.apply_chat_template_kwargs``) pin
the same variables, so every stage renders one prompt text.

    messages = chat_messages("Use [1, 2] to make 3.", system=None)
    ids = encode_chat(tokenizer, messages, template_kwargs={"date_string": "26 Jul 2024"})
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from skill_factory.errors import SkillFactoryError


def chat_messages(user: str, system: Optional[str] = None) -> list[dict[str, str]]:
    """A single-turn conversation: optional system prompt, then the user prompt."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": user})
    return messages


def load_tokenizer(model_path: str, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer, with a clear error when it cannot be loaded or has no template."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise SkillFactoryError(
            f"model.path: cannot load a tokenizer from '{model_path}' ({str(exc).splitlines()[0]}); "
            "point model.path at a Hugging Face model directory or hub id") from exc
    if not getattr(tok, "chat_template", None):
        raise SkillFactoryError(
            f"model.path: the tokenizer of '{model_path}' has no chat template; generation renders "
            "prompts with it (use an instruct/chat model, or add a chat_template to tokenizer_config.json)")
    return tok


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]],
                template_kwargs: Optional[Mapping[str, Any]] = None) -> str:
    """The prompt text the model sees, ending with the assistant turn's opening."""
    return tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                         add_generation_prompt=True, **dict(template_kwargs or {}))


def encode_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]], source: str = "model",
                template_kwargs: Optional[Mapping[str, Any]] = None) -> list[int]:
    text = render_chat(tokenizer, messages, template_kwargs)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise SkillFactoryError(f"model.path: the chat template of '{source}' rendered an empty prompt")
    return list(ids)
