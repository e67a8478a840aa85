"""GRPO for the rl stage: one data format and one reward, two engines.

- ``data``: the task's questions as verl RL parquet files (``RLHFDataset`` loads them; TRL
  reads the same files), prompts rendered exactly as the sample stage renders them.
- ``reward``: the reward file (``rewards/answer_tag.py``) loaded by path, and the one small
  function that adapts it to TRL's reward-function signature.
- ``verl_run``: ``rl`` settings mapped to ``verl.trainer.main_ppo`` overrides, the pre-flight
  (verl's packaged config composed with them in-process, plus our value checks), the exact
  launch (single node, or a Ray cluster over several) and the model-merger handoff.
- ``trl_grpo``: the same GRPO settings on TRL's ``GRPOTrainer``, CPU capable.

Nothing here imports torch, verl or TRL at module import; the engines load inside the
functions that need them.
"""
