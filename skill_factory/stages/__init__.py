"""The method's stages, one module each; importing this package registers them.

Each module defines one function decorated with ``skill_factory.pipeline.stage``. Engines
(torch, transformers, LLaMA-Factory, verl, vLLM) are imported inside the stage functions,
never at module import, so composing a config or running one stage stays fast.
"""
from skill_factory.stages import bootstrap, reflect, sample  # noqa: F401  (register)
from skill_factory.stages import sft  # noqa: F401  (register)
from skill_factory.stages import traces  # noqa: F401  (register)
from skill_factory.stages import rl  # noqa: F401  (register)
from skill_factory.stages import eval  # noqa: F401,A004  (register)
