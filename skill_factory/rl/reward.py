"""The reward both backends use: ``rewards/answer_tag.py``, loaded by path.

verl loads the file itself (``reward.custom_reward_function.path`` / ``.name``); TRL gets the
same file's ``compute_score_batch`` through ``trl_reward``, the one small adapter between
TRL's reward-function signature (``prompts``, ``completions`` and every dataset column as
keyword lists) and verl's batch contract (``data_sources``, ``solution_strs``,
``ground_truths``, ``extra_infos``). So the verifier that grades sampling, reflection and
evaluation also decides every RL reward, whichever engine trains.
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from skill_factory.errors import SkillFactoryError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_REWARD_FILE = REPO / "rewards" / "answer_tag.py"
BATCH_FUNCTION = "compute_score_batch"
# keyword arguments each verl reward manager passes to the custom function
PER_SAMPLE_ARGS = ("data_source", "solution_str", "ground_truth", "extra_info")
BATCH_ARGS = ("data_sources", "solution_strs", "ground_truths", "extra_infos")


def reward_file(cfg) -> Path:
    """The reward file of this run (``rl.reward_file``, else ours), absolute."""
    path = cfg.rl.reward_file
    return Path(path).expanduser().resolve() if path else DEFAULT_REWARD_FILE


def load_function(path: Path, name: str, key: str = "rl.reward_file") -> Callable:
    """``name`` from the Python file at ``path`` (imported by path, as verl does)."""
    if not Path(path).is_file():
        raise SkillFactoryError(f"{key}: reward file not found: {path}")
    module_name = f"skillfactory_reward_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SkillFactoryError(f"{key}: cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure of a user file is a user error
        raise SkillFactoryError(f"{key}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        exported = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                          and getattr(v, "__module__", None) == module_name)
        raise SkillFactoryError(f"rl.verl.reward_function: {path} exports no function '{name}' "
                                f"(it has: {', '.join(exported) or 'none'})")
    return fn


def accepts(fn: Callable, names: tuple[str, ...]) -> bool:
    """Whether ``fn`` is written for a call with these keyword arguments.

    Each name must be a parameter of its own; a ``**kwargs`` catch-all does not count, since
    it would swallow the per-sample arguments of a batch function (and the reverse) and the
    function would score nothing.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return all(n in params and params[n].kind in kinds for n in names)


def _text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a chat list whose last message is ours."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion:
        last = completion[-1]
        if isinstance(last, dict):
            return str(last.get("content", ""))
    return str(completion)


def trl_reward(batch_fn: Callable, reward_kwargs: Optional[dict] = None) -> Callable:
    """TRL reward function calling the verl batch reward ``batch_fn`` on the same columns.

    TRL passes ``completions`` (chat lists for chat prompts) and the dataset's columns
    (``data_source``, ``reward_model``, ``extra_info``) as lists, one entry per completion.
    """
    extra = dict(reward_kwargs or {})

    def answer_tag(prompts=None, completions=(), data_source=None, reward_model=None, extra_info=None,
                   **_: Any) -> list[float]:
        n = len(completions)
        return [float(x) for x in batch_fn(
            data_sources=list(data_source or [None] * n),
            solution_strs=[_text(c) for c in completions],
            ground_truths=[(rm or {}).get("ground_truth") for rm in (reward_model or [None] * n)],
            extra_infos=list(extra_info or [{}] * n),
            **extra)]

    return answer_tag
