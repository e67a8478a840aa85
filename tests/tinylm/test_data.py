"""The tiny model's training data: canonical solutions, own-answer checks, value embeddings."""
from __future__ import annotations

import random

import pytest

from skill_factory.tasks import build_task
from skill_factory.tinylm.data import canonical_solution, check_text, format_answer


@pytest.mark.parametrize("spellings, expected", [
    (["88 + (89 - 32)", "(89 - 32) + 88", "(88 - 32) + 89", "89 - (32 - 88)"], "(89 + 88) - 32"),
    (["(43 * 9) - 42", "9 * 43 - 42"], "(43 * 9) - 42"),
    (["77 + (72 / 6)", "(72 / 6) + 77"], "(72 / 6) + 77"),
    (["(60 / 5) / 3", "60 / (5 * 3)", "60 / (3 * 5)"], "(60 / 5) / 3"),
])
def test_every_spelling_of_a_solution_is_written_one_way(spellings, expected):
    assert {canonical_solution(s)[0] for s in spellings} == {expected}


@pytest.mark.parametrize("num_numbers", [3, 4, 5])
def test_canonical_solutions_and_their_steps_still_solve_the_problem(num_numbers):
    task = build_task("countdown", num_numbers=num_numbers)
    for q in task.questions("train", 300, seed=3):
        text, steps = canonical_solution(q.meta["solution"])
        assert task.score(text, q.gold), (q.meta, text)
        assert task.score("\n".join(steps), q.gold), (q.meta, steps)
        # every intermediate result is a positive whole number (writable in either form)
        assert all(int(s.rsplit("= ", 1)[1]) > 0 for s in steps)


def test_checks_recompute_the_answer_before_the_verdict():
    answer = format_answer(*canonical_solution("(89 - 32) + 88"), step_form=False)
    inner = answer[len("<answer>"):-len("</answer>")]
    assert check_text(inner, [88, 32, 89], 145, True) == \
        "89 + 88 = 177, 177 - 32 = 145, target 145 <verdict>Correct</verdict>"
    assert check_text("89 + 88 + 32", [88, 32, 89], 145, False) == \
        "89 + 88 = 177, 177 + 32 = 209, target 145 <verdict>Incorrect</verdict>"
    assert check_text("89 + 32", [88, 32, 89], 145, False).endswith("wrong numbers <verdict>Incorrect</verdict>")


def test_value_features_make_near_numbers_near():
    import torch

    from skill_factory.config.schema import BootstrapConfig
    from skill_factory.tinylm.build import init_value_embeddings, new_model
    from skill_factory.tinylm.tokenizer import build_tokenizer

    tok = build_tokenizer(["Use [1, 2] to make 3."])
    torch.manual_seed(0)
    bc = BootstrapConfig()
    model = new_model(tok, bc)
    assert init_value_embeddings(model, tok, bc.value_features) == 1000
    emb = model.get_input_embeddings().weight[:, : bc.value_features]

    def sim(a, b):
        ids = tok.convert_tokens_to_ids([str(a), str(b)])
        return torch.cosine_similarity(emb[ids[0]], emb[ids[1]], dim=0).item()

    assert sim(88, 89) > 0.6
    assert sim(88, 89) > sim(88, 120) > sim(88, 600)
    random.seed(0)
    pairs = [random.sample(range(1000), 2) for _ in range(200)]
    assert sum(abs(sim(a, b)) for a, b in pairs) / len(pairs) < 0.5


def test_rarely_seen_numbers_take_their_neighbours_embeddings():
    import torch

    from skill_factory.config.schema import BootstrapConfig
    from skill_factory.tinylm.build import new_model, smooth_rare_numbers
    from skill_factory.tinylm.tokenizer import build_tokenizer

    tok = build_tokenizer(["Use [1, 2] to make 3."])
    torch.manual_seed(0)
    model = new_model(tok, BootstrapConfig())
    emb = model.get_input_embeddings().weight
    before = emb.detach().clone()
    i = {n: tok.convert_tokens_to_ids(str(n)) for n in range(1000)}
    # every number read in 3 prompts except 374 and 375 (once) and 999 (only ever written)
    seen = [i[n] for n in range(999) if n not in (374, 375)]
    rows = [{"input_ids": seen, "labels": [-100] * len(seen)}] * 3
    rows.append({"input_ids": [i[374], i[375]], "labels": [-100, -100]})
    rows += [{"input_ids": [i[0], i[999]], "labels": [-100, i[999]]}] * 3
    assert smooth_rare_numbers(model, tok, rows, min_count=3) == 3
    after = emb.detach()
    assert torch.allclose(after[i[374]], before[i[373]] * 2 / 3 + before[i[376]] / 3)
    assert torch.allclose(after[i[375]], before[i[373]] / 3 + before[i[376]] * 2 / 3)
    assert torch.equal(after[i[999]], before[i[998]])  # nothing above: the nearest below
    untouched = [i[n] for n in range(999) if n not in (374, 375)]
    assert torch.equal(after[untouched], before[untouched])
    # the output layer is tied to the input embeddings: it reads the same numbers
    assert model.lm_head.weight.data_ptr() == emb.data_ptr()
    assert smooth_rare_numbers(model, tok, rows, min_count=0) == 0
