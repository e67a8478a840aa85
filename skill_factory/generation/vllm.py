"""vLLM backend: the offline ``vllm.LLM`` engine, for the real models on GPUs.

Why this shape: vLLM does its own continuous batching, so the whole call goes to one
``LLM.generate`` with one ``SamplingParams`` per prompt (each carrying the prompt's own
seed, so a completion does not depend on its batch mates). Prompts are rendered with the
model's chat template (and ``model.chat_template_kwargs``) by the Hugging Face tokenizer and
passed as token ids (``{"prompt_token_ids": [...]}``, vLLM's ``TokensPrompt``), so vLLM
cannot add a second BOS and both backends see byte-identical prompts. (``LLM.chat`` also
takes ``chat_template_kwargs``, but rendering it ourselves keeps the two backends identical.)

vLLM is the ``gpu`` extra (``pip install skill-factory[gpu]``, pinned to vllm 0.28.0); it is
imported only when this backend is selected (``model.backend=vllm``). The arguments are
built by two pure functions, ``engine_kwargs`` and ``sampling_kwargs``, which the tests
check against the pinned API without a GPU.

    skillfactory model=qwen2_5_1_5b_instruct stages=[sample]          # model.backend=vllm
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from skill_factory.errors import SkillFactoryError
from skill_factory.generation.base import Backend, Completion, ProgressFn, Sampling

log = logging.getLogger(__name__)

VLLM_PIN = "0.28.0"


def engine_kwargs(model_path: str, model_cfg: Any) -> dict:
    """Keyword arguments of ``vllm.LLM(...)`` for a model config.

    ``max_model_len`` is not a named parameter of ``LLM.__init__``; it travels through its
    ``**kwargs`` into ``EngineArgs``. ``seed`` only seeds the engine's global RNG; sampling
    is seeded per request.
    """
    return {
        "model": model_path,
        "tokenizer": model_path,
        "dtype": model_cfg.dtype,
        "tensor_parallel_size": int(model_cfg.tensor_parallel_size),
        "gpu_memory_utilization": float(model_cfg.gpu_memory_utilization),
        "max_model_len": int(model_cfg.max_length),
        "trust_remote_code": bool(model_cfg.trust_remote_code),
        "seed": 0,
    }


def sampling_kwargs(sampling: Sampling, seed: int) -> dict:
    """Keyword arguments of ``vllm.SamplingParams(...)`` for one prompt.

    ``include_stop_str_in_output`` keeps a stop string in the text, as the hf backend
    does (a reflection stopped at ``</verdict>`` must keep its closing tag to be parsed).
    """
    return {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "stop": list(sampling.stop) or None,
        "include_stop_str_in_output": True,
        "skip_special_tokens": True,
        "seed": int(seed),
    }


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise SkillFactoryError(
            "model.backend: 'vllm' is selected but vLLM is not installed; install the GPU extra "
            f"(pip install 'skill-factory[gpu]', vllm=={VLLM_PIN}) on a CUDA machine, or use "
            "model.backend=hf") from exc
    return vllm


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, model_cfg: Any):
        super().__init__(model_path, model_cfg)
        vllm = _import_vllm()
        installed = getattr(vllm, "__version__", None)
        if installed is not None and installed != VLLM_PIN:
            log.warning("vllm %s is installed; this adapter is written against vllm==%s",
                        installed, VLLM_PIN)
        self._vllm = vllm
        self.engine_kwargs = engine_kwargs(model_path, model_cfg)
        self.llm = vllm.LLM(**self.engine_kwargs)

    def _generate(self, prompts: list[list[int]], sampling: Sampling, seeds: list[int],
                  on_progress: Optional[ProgressFn]) -> list[list[Completion]]:
        requests = [{"prompt_token_ids": ids} for ids in prompts]
        params = [self._vllm.SamplingParams(**sampling_kwargs(sampling, seed)) for seed in seeds]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        result, tokens = [], 0
        for request in outputs:
            row = [Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                   for o in sorted(request.outputs, key=lambda o: o.index)]
            tokens += sum(c.num_tokens for c in row)
            result.append(row)
        if on_progress is not None:
            on_progress(len(prompts) * sampling.n, tokens)
        return result

    def close(self) -> None:
        self.llm = None
