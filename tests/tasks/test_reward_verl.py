"""``rewards/answer_tag.py`` loaded through verl's own loaders, scoring a hand-built DataProto.

Covers both paths verl 0.9.1 has: ``get_custom_reward_fn`` feeding the legacy
``BatchRewardManager`` (``compute_score_batch``), and ``load_reward_manager`` building the
0.9 ``naive`` reward-loop manager whose ``run_single`` calls ``compute_score`` per sample.
The config is verl's packaged ``ppo_trainer``, composed with Hydra and our overrides.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
verl = pytest.importorskip("verl")

from hydra import compose, initialize_config_dir

from skill_factory.tasks import build_task

REWARD_FILE = Path(__file__).resolve().parents[2] / "rewards" / "answer_tag.py"
VERL_CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


@pytest.fixture(scope="module")
def tokenizer():
    """A character-level tokenizer built locally (no download), wrapped as a HF tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n", "…"]
    special = ["<pad>", "<unk>", "<eos>"]
    vocab = {tok: i for i, tok in enumerate(special + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def _compose(overrides):
    with initialize_config_dir(config_dir=VERL_CONFIG_DIR, version_base=None):
        return compose("ppo_trainer", overrides=overrides)


def _make_batch(tokenizer, rows):
    """DataProto with left-padded prompts and right-padded responses, as verl's rollout makes."""
    from verl import DataProto

    pad = tokenizer.pad_token_id
    prompts = [tokenizer.encode(p, add_special_tokens=False) for p, _, _, _ in rows]
    responses = [tokenizer.encode(r, add_special_tokens=False) + [tokenizer.eos_token_id] for _, r, _, _ in rows]
    P = max(map(len, prompts))
    R = max(map(len, responses))
    prompt_t = torch.full((len(rows), P), pad, dtype=torch.long)
    resp_t = torch.full((len(rows), R), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), P + R), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        prompt_t[i, P - len(p) :] = torch.tensor(p)
        resp_t[i, : len(r)] = torch.tensor(r)
        mask[i, P - len(p) : P] = 1
        mask[i, P : P + len(r)] = 1
    return DataProto.from_dict(
        tensors={
            "prompts": prompt_t,
            "responses": resp_t,
            "input_ids": torch.cat([prompt_t, resp_t], dim=1),
            "attention_mask": mask,
        },
        non_tensors={
            "data_source": np.array([s for _, _, s, _ in rows], dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": g} for _, _, _, g in rows], dtype=object),
            "extra_info": np.array([{"split": "train", "index": i} for i in range(len(rows))], dtype=object),
        },
    ), [len(r) for r in responses]


@pytest.fixture(scope="module")
def rows():
    q = build_task("countdown").questions("train", 1, seed=0)[0]
    right = q.meta["solution"]
    trace = (
        "<think>\n<sample>\n<answer>1 + 1</answer>\n</sample>\n<reflect>\n<verdict>Incorrect</verdict>\n</reflect>\n"
        f"Let me try again.\n<sample>\n<answer>{right}</answer>\n</sample>\n</think>\n\n<answer>\n{right}\n</answer>"
    )
    prompt = build_task("countdown").render(q)
    return [
        (prompt, f"Thinking... <answer>{right}</answer>", "countdown", q.gold),
        (prompt, "<answer>1 + 2 + 3</answer>", "countdown", q.gold),
        (prompt, trace, "countdown", q.gold),
        (prompt, "no answer at all", "countdown", q.gold),
        ("What is 12 * 34?", "<answer>408</answer>", "longmult", "408"),
        ("?", "<answer>408</answer>", "unknown_source", "408"),
    ]


EXPECTED = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_legacy_batch_manager_through_get_custom_reward_fn(tokenizer, rows):
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager.batch import BatchRewardManager

    cfg = _compose(
        [
            f"reward.custom_reward_function.path={REWARD_FILE}",
            "reward.custom_reward_function.name=compute_score_batch",
        ]
    )
    fn = get_custom_reward_fn(cfg)
    assert fn is not None
    manager = BatchRewardManager(tokenizer=tokenizer, num_examine=0, compute_score=fn, reward_fn_key="data_source")
    data, lengths = _make_batch(tokenizer, rows)
    out = manager(data, return_dict=True)
    reward = out["reward_tensor"]
    assert reward.shape == data.batch["responses"].shape
    for i, n in enumerate(lengths):
        assert reward[i, n - 1].item() == EXPECTED[i]
        assert reward[i].sum().item() == EXPECTED[i]


def test_reward_kwargs_reach_the_function(tokenizer, rows):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = _compose(
        [
            f"reward.custom_reward_function.path={REWARD_FILE}",
            "reward.custom_reward_function.name=compute_score_batch",
            "+reward.custom_reward_function.reward_kwargs.format_score=0.1",
        ]
    )
    fn = get_custom_reward_fn(cfg)
    scores = fn(
        data_sources=[s for _, _, s, _ in rows],
        solution_strs=[r for _, r, _, _ in rows],
        ground_truths=[g for _, _, _, g in rows],
        extra_infos=[{} for _ in rows],
    )
    # tagged but wrong answers get the format credit; untagged and unknown sources get 0
    assert scores == [1.0, 0.1, 1.0, 0.0, 1.0, 0.0]


def test_verl_09_reward_loop_manager_through_load_reward_manager(tokenizer, rows):
    from verl.trainer.ppo.reward import load_reward_manager

    cfg = _compose(
        [
            f"reward.custom_reward_function.path={REWARD_FILE}",
            "reward.custom_reward_function.name=compute_score",
            "reward.reward_manager.name=naive",
        ]
    )
    manager = load_reward_manager(cfg, tokenizer)
    assert type(manager).__name__ == "NaiveRewardManager"
    data, _ = _make_batch(tokenizer, rows)
    got = []
    for i in range(len(data)):
        result = manager.loop.run_until_complete(manager.run_single(data[i : i + 1]))
        got.append(result["reward_score"])
    assert got == EXPECTED
