"""The vLLM adapter at its boundary: the exact engine and sampling arguments it builds.

vLLM (the ``gpu`` extra, pinned ``vllm==0.28.0``) is not installed on the CPU test machine,
so a stand-in ``vllm`` module records what the adapter passes, and the argument names are
checked against the pinned API. When vLLM *is* installed, ``test_against_installed_vllm``
checks the same names against the real signatures instead.

What was checked (vLLM source, vllm-project/vllm; no v0.28.0 tag was in the searchable
source store, so these are the newest stored revisions of the V1-engine API, and every
name used here is one that has stayed stable across the stored revisions):

- ``vllm/entrypoints/llm.py`` (commit 10fdb8f0d75a3ad1122b87020f1359d3fc51f2ca, the V1
  engine line): ``LLM.__init__(self, model, *, runner, convert, tokenizer, tokenizer_mode,
  skip_tokenizer_init, trust_remote_code, allowed_local_media_path, allowed_media_domains,
  tensor_parallel_size, dtype, quantization, revision, tokenizer_revision, seed=0,
  gpu_memory_utilization=0.9, swap_space, cpu_offload_gb, enforce_eager, ...,
  **kwargs)``, the ``**kwargs`` going to ``EngineArgs`` (which has ``max_model_len``, per
  vLLM's engine-args reference). ``LLM.generate(self, prompts, sampling_params=None, *,
  use_tqdm=True, lora_request=None, priority=None, tokenization_kwargs=None)``: a list of
  ``SamplingParams`` "is paired one by one with the prompt"; outputs come back "in the same
  order as the input prompts". A token prompt is ``TokensPrompt(prompt_token_ids=[...])``,
  a TypedDict, i.e. a plain dict with that key.
  ``LLM.chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None,
  chat_template=None, chat_template_content_format="auto", add_generation_prompt=True,
  continue_final_message=False, tools=None, chat_template_kwargs=None, tokenization_kwargs=None,
  mm_processor_kwargs=None)`` renders with the tokenizer's template and calls ``generate``;
  the adapter does not call it: it renders prompts itself (with the model's
  ``chat_template_kwargs``) so both backends see the same ids, and passes token prompts.
- ``vllm/sampling_params.py`` (commit 00388f6573ccfcffad607b8c9ecdf341a4669ceb):
  ``SamplingParams`` fields ``n``, ``temperature`` (0 = greedy), ``top_p``, ``seed``,
  ``stop`` ("the returned output will not contain the stop strings" unless
  ``include_stop_str_in_output``), ``max_tokens`` (default 16), ``skip_special_tokens``.
- ``vllm/outputs.py``: ``RequestOutput.outputs`` is a list of ``CompletionOutput(index,
  text, token_ids, cumulative_logprob, logprobs, finish_reason, stop_reason)``;
  ``finish_reason`` is ``"stop"`` or ``"length"``.
"""
from __future__ import annotations

import inspect
import sys
import types
from types import SimpleNamespace

import pytest

from skill_factory.errors import SkillFactoryError
from skill_factory.generation import Sampling, chat_messages, make_backend
from skill_factory.generation.vllm import VLLM_PIN, engine_kwargs, sampling_kwargs
from tiny_lm import shared_tiny_lm

# The pinned API, as checked above: named LLM.__init__ parameters we use, EngineArgs fields
# we pass through **kwargs, SamplingParams fields we set, LLM.generate keywords we use.
LLM_INIT_PARAMS = {"model", "tokenizer", "trust_remote_code", "tensor_parallel_size", "dtype", "seed",
                   "gpu_memory_utilization"}
ENGINE_ARGS_VIA_KWARGS = {"max_model_len"}
SAMPLING_FIELDS = {"n", "temperature", "top_p", "seed", "stop", "max_tokens", "skip_special_tokens",
                   "include_stop_str_in_output"}
GENERATE_KEYWORDS = {"use_tqdm"}


def model_cfg(**kw):
    base = dict(max_length=4096, trust_remote_code=True, dtype="bfloat16", generation_batch_size=64,
                backend="vllm", tensor_parallel_size=4, chat_template_kwargs={}, gpu_memory_utilization=0.8)
    base.update(kw)
    return SimpleNamespace(**base)


def test_engine_arguments_from_the_model_config():
    assert engine_kwargs("Qwen/Qwen2.5-1.5B-Instruct", model_cfg()) == {
        "model": "Qwen/Qwen2.5-1.5B-Instruct",
        "tokenizer": "Qwen/Qwen2.5-1.5B-Instruct",
        "dtype": "bfloat16",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.8,
        "max_model_len": 4096,
        "trust_remote_code": True,
        "seed": 0,
    }
    assert set(engine_kwargs("m", model_cfg())) <= LLM_INIT_PARAMS | ENGINE_ARGS_VIA_KWARGS


def test_sampling_arguments_from_the_settings():
    s = Sampling(n=4, temperature=0.7, top_p=0.9, max_new_tokens=1024, stop=("</answer>",))
    assert sampling_kwargs(s, seed=123) == {
        "n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 1024, "stop": ["</answer>"],
        "include_stop_str_in_output": True, "skip_special_tokens": True, "seed": 123,
    }
    assert sampling_kwargs(Sampling(), seed=1)["stop"] is None
    assert set(sampling_kwargs(s, 0)) <= SAMPLING_FIELDS


class FakeVLLM(types.ModuleType):
    """Records what the adapter hands to vLLM and answers like vLLM 0.28 would."""

    def __init__(self):
        super().__init__("vllm")
        self.__version__ = VLLM_PIN
        self.engines: list[dict] = []
        self.calls: list[tuple] = []
        fake = self

        class SamplingParams:
            def __init__(self, **kwargs):
                unknown = set(kwargs) - SAMPLING_FIELDS
                assert not unknown, unknown
                self.kwargs = kwargs

        class LLM:
            def __init__(self, model, **kwargs):
                unknown = set(kwargs) - LLM_INIT_PARAMS - ENGINE_ARGS_VIA_KWARGS
                assert not unknown, unknown
                fake.engines.append({"model": model, **kwargs})

            def generate(self, prompts, sampling_params=None, **kwargs):
                assert set(kwargs) <= GENERATE_KEYWORDS
                fake.calls.append((prompts, sampling_params, kwargs))
                outs = []
                for p, sp in zip(prompts, sampling_params):
                    n = sp.kwargs["n"]
                    # completions come back out of index order; the adapter must sort them
                    comps = [SimpleNamespace(index=j, text=f"seed{sp.kwargs['seed']}-{j}",
                                             token_ids=[1] * (j + 2), finish_reason="length" if j else "stop",
                                             stop_reason=None)
                             for j in reversed(range(n))]
                    outs.append(SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=comps))
                return outs

        self.LLM = LLM
        self.SamplingParams = SamplingParams


def test_backend_passes_token_prompts_and_per_prompt_seeds(monkeypatch):
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    path = str(shared_tiny_lm())
    backend = make_backend(model_cfg(max_length=512, dtype="auto", trust_remote_code=False), path)
    assert fake.engines == [engine_kwargs(path, model_cfg(max_length=512, dtype="auto", trust_remote_code=False))]
    convs = [chat_messages("Use [1, 2] to make 3."), chat_messages("Use [4, 5] to make 9.", system="sys")]
    progress = []
    result = backend.generate(convs, Sampling(n=3, max_new_tokens=32), seeds=[11, 22],
                              on_progress=lambda c, t: progress.append((c, t)))
    (prompts, params, kwargs), = fake.calls
    assert kwargs == {"use_tqdm": False}
    assert prompts == [{"prompt_token_ids": ids} for ids in backend.encode(convs)]
    assert [p.kwargs["seed"] for p in params] == [11, 22]
    assert params[0].kwargs == sampling_kwargs(Sampling(n=3, max_new_tokens=32), 11)
    assert [[c.text for c in row] for row in result.completions] == [
        ["seed11-0", "seed11-1", "seed11-2"], ["seed22-0", "seed22-1", "seed22-2"]]
    assert [c.finish_reason for c in result.completions[0]] == ["stop", "length", "length"]
    assert result.generated_tokens == 2 * (2 + 3 + 4)
    assert progress == [(6, 18)]


def test_token_prompts_carry_the_models_chat_template_kwargs(monkeypatch, tmp_path):
    """The ids vLLM gets are rendered with model.chat_template_kwargs (Llama 3.2's date_string),
    not by vLLM's own chat rendering (the stand-in has no LLM.chat to call)."""
    from tiny_lm import DATED_CHAT_TEMPLATE, build_tiny_lm

    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    path = str(build_tiny_lm(tmp_path / "dated", chat_template=DATED_CHAT_TEMPLATE))
    cfg = model_cfg(max_length=512, dtype="auto", trust_remote_code=False,
                    chat_template_kwargs={"date_string": "26 Jul 2024"})
    backend = make_backend(cfg, path)
    assert fake.engines == [engine_kwargs(path, cfg)]  # nothing about the template goes to the engine
    backend.generate([chat_messages("Use [1, 2] to make 3.")], Sampling(n=1, max_new_tokens=8), seeds=[5])
    (prompts, _params, kwargs), = fake.calls
    assert kwargs == {"use_tqdm": False} and len(prompts) == 1 and set(prompts[0]) == {"prompt_token_ids"}
    assert backend.tokenizer.decode(prompts[0]["prompt_token_ids"]) == (
        "<|im_start|>system\nToday Date: 26 Jul 2024\n\n<|im_end|>\n"
        "<|im_start|>user\nUse [1, 2] to make 3.<|im_end|>\n<|im_start|>assistant\n")


def test_missing_vllm_is_a_clear_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(SkillFactoryError, match=r"vLLM is not installed.*gpu.*model.backend=hf"):
        make_backend(model_cfg(), str(shared_tiny_lm()))


def test_against_installed_vllm():
    """Only where vLLM is installed: the names we pass exist in its real API."""
    vllm = pytest.importorskip("vllm")
    from vllm.engine.arg_utils import EngineArgs

    init = inspect.signature(vllm.LLM.__init__).parameters
    assert LLM_INIT_PARAMS <= set(init)
    engine_fields = set(inspect.signature(EngineArgs).parameters)
    assert ENGINE_ARGS_VIA_KWARGS <= engine_fields
    assert SAMPLING_FIELDS <= set(vllm.SamplingParams.__struct_fields__)
    assert GENERATE_KEYWORDS <= set(inspect.signature(vllm.LLM.generate).parameters)
