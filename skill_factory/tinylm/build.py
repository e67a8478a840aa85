"""Build, train and measure the embedded tiny Countdown model.

Two training phases. First the solver: answer examples in every prompt variant, the
generator's solution written one canonical way (``data.canonical_solution``), a few
plausibly wrong. Then the checker: the solver samples its own answers to fresh questions,
the task's verifier grades them, and it learns to check them (recomputed arithmetic, target,
verdict), mixed with more answer examples at a lower learning rate so the solver is kept.
Its own answers, because a verifier trained on unlike (synthetic) negatives learns to call
all of its own answers Correct. Last, number tokens no training prompt showed (the test
split's targets above the largest given number) take their neighbours' embeddings
(``smooth_rare_numbers``).

What moved the sampled accuracy (T=1, held-out targets) in equal training (2,000 steps of
64, no check phase), measured one change at a time: the generator's own mix of operations
4.1%; the solution written one canonical way 10% (with * and / weighted up, 6.8%); number
embeddings started from value features (``init_value_embeddings``) 13%; + and - chains
flattened in the canonical form 18%; 5% wrong answers and 10% 4-number questions in place
of 10% and 15%: 22%. A learning rate of 6e-3 (9%) or batches of 128 (5%) did worse.
On the default recipe (with the check phase): 20.2% before the rare-number embeddings were
smoothed, 43.9% after. Verdict accuracy on its own answers: 59.0% with 300 check steps and
10% flipped verdicts, 62.0% with 5% flipped, 64.7% with 450 steps, 66.2% with both.

Everything runs on CPU with transformers' ``Trainer``; the result is an ordinary Llama
folder (``config.json``, weights, tokenizer, chat template) that every later stage loads
like a hub model.

    stats = build_tiny_model(cfg.model.bootstrap, cfg.prompts, cfg.model, out_dir, scratch=tmp)
"""
from __future__ import annotations

import bisect
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from skill_factory.tinylm.data import CHECK_PHRASES, canonical_solution, check_text, format_answer, wrong_answer
from skill_factory.tinylm.tokenizer import build_tokenizer
from skill_factory.verdicts import parse_verdict

log = logging.getLogger(__name__)

# Held-out quality measurement (test split: targets disjoint from training targets).
EVAL_NUM_NUMBERS = (3, 4)
ANSWER_TOKENS = 48
CHECK_TOKENS = 64
# own answers sampled per training question for the check phase
OWN_SAMPLES = 2


@dataclass
class Example:
    user: str
    assistant: str


def _questions(num_numbers: int, split: str, size: int, seed: int):
    from skill_factory.tasks import build_task

    task = build_task("countdown", num_numbers=num_numbers)
    return task, task.questions(split, size, seed=seed)


def train_questions(size: int, four_rate: float, seed: int):
    """Training questions, 3- and 4-number, shuffled, in the generator's own mix of
    operations (weighting * and / up, where a tiny model is weakest, cost it more on the
    + and - problems than it gained: 6.8% vs 10% sampled accuracy in equal training)."""
    n4 = int(round(size * four_rate))
    out = []
    for num, want in ((3, size - n4), (4, n4)):
        out += _questions(num, "train", want, seed)[1]
    random.Random(seed).shuffle(out)
    return out


def answer_examples(questions, variants: dict, wrong_rate: float, step_variants: Sequence[str],
                    rng: random.Random) -> list[Example]:
    """Each question in a random prompt variant, answered with the generator's solution or,
    for a share ``wrong_rate``, a plausible wrong expression; variants named in
    ``step_variants`` answer in ``Step k:`` form."""
    names = sorted(variants)
    out = []
    for q in questions:
        variant = rng.choice(names)
        step_form = variant in step_variants
        m = q.meta
        answer = None
        if rng.random() < wrong_rate:
            answer = wrong_answer(rng, m["numbers"], m["target"], step_form)
        if answer is None:
            answer = format_answer(*canonical_solution(m["solution"]), step_form)
        out.append(Example(variants[variant].format(**q.fields), answer))
    return out


def check_examples(users: Sequence[str], questions, replies: Sequence[Sequence[str]], prompts,
                   verdict_noise: float, rng: random.Random) -> tuple[list[Example], float]:
    """Check examples of the model's own sampled answers: its reply to ``users[i]`` ->
    the recomputed arithmetic, the target and the verdict the checker gives, flipped for a
    share ``verdict_noise``. Returns the examples and the share of replies that were right.

    Its own answers, not synthetic ones: its mistakes (the right numbers, arithmetic it got
    wrong) are unlike random wrong expressions, and a verifier trained on the latter calls
    nearly all of its own answers Correct.
    """
    task = _questions(3, "train", 0, 0)[0]  # Countdown's grade reads all it needs from the gold
    out, right = [], 0
    for user, q, rs in zip(users, questions, replies):
        m = q.meta
        for reply in rs:
            inner, correct = task.grade(reply, q.gold)
            right += correct
            verdict = correct if rng.random() >= verdict_noise else not correct
            out.append(Example(prompts.reflection.format(question=user, response=reply),
                               check_text(inner, m["numbers"], m["target"], verdict)))
    return out, right / max(len(out), 1)


def _encode(tok, examples: Sequence[Example], max_len: int):
    """Token ids and labels (assistant tokens only), via the model's chat template.

    The template is rendered once around a marker and reused as prefix + text + suffix:
    rendering Jinja per example costs more than the tokenization itself.
    """
    marker = "\x00"
    rendered = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                       add_generation_prompt=True)
    prefix, suffix = rendered.split(marker)
    p_ids = tok([prefix + e.user + suffix for e in examples], add_special_tokens=False)["input_ids"]
    a_ids = tok([e.assistant + "<|im_end|>" for e in examples], add_special_tokens=False)["input_ids"]
    rows = []
    for p, a in zip(p_ids, a_ids):
        ids = (p + a)[:max_len]
        labels = ([-100] * len(p) + a)[:max_len]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


class _Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows):
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _answer_only_loss(model, inputs):
    """Cross-entropy on assistant tokens only, computing logits only there.

    The output layer over the whole vocabulary is a large share of a tiny model's compute;
    most positions are prompt tokens whose logits the loss ignores anyway.
    """
    import torch.nn.functional as F

    hidden = model.model(input_ids=inputs["input_ids"],
                         attention_mask=inputs["attention_mask"]).last_hidden_state[:, :-1]
    target = inputs["labels"][:, 1:]
    keep = target != -100
    return F.cross_entropy(model.lm_head(hidden[keep]).float(), target[keep])


def _train(model, tok, rows, steps: int, learning_rate: float, bc, out_dir, seed: int):
    from transformers import Trainer, TrainingArguments

    class AnswerOnlyTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return _answer_only_loss(model, inputs)

    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=bc.batch_size,
        learning_rate=learning_rate,
        warmup_steps=min(bc.warmup_steps, steps // 10),
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        adam_beta2=0.98,
        logging_steps=max(steps // 10, 1),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    trainer = AnswerOnlyTrainer(model=model, args=args, train_dataset=rows,
                                data_collator=_Collator(tok.pad_token_id))
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def new_model(tok, bc):
    from transformers import LlamaConfig, LlamaForCausalLM

    if bc.hidden_size % bc.num_heads or bc.hidden_size // bc.num_heads < 32:
        raise ValueError("model.bootstrap: hidden_size / num_heads must be a whole number >= 32")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=bc.hidden_size,
        intermediate_size=bc.intermediate_size,
        num_hidden_layers=bc.num_layers,
        num_attention_heads=bc.num_heads,
        num_key_value_heads=bc.num_heads,
        max_position_embeddings=bc.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


def init_value_embeddings(model, tok, features: int) -> int:
    """Start each number token's embedding with features of its value; returns how many.

    A learned embedding table starts with no idea that 88 is near 89 or that 57 + 88 is
    145; a tiny model spends much of its budget discovering it, one number at a time.
    Sines and cosines of the value at periods from 2 to 2000 (the code of the Fourier
    features networks find for themselves when learning addition) put that structure in
    from the start: ``features`` of the ``hidden_size`` dimensions, the rest stay random.
    Embeddings are tied, so the output layer reads numbers the same way.
    """
    import math

    import torch

    pairs = features // 2
    if not pairs:
        return 0
    periods = [2.0 * 1000.0 ** (j / max(pairs - 1, 1)) for j in range(pairs)]
    weight = model.get_input_embeddings().weight
    scale = weight.detach().std().item() * 2.0
    numbers = 0
    with torch.no_grad():
        for n in range(1000):
            ids = tok.convert_tokens_to_ids([str(n)])
            if not ids or ids[0] is None or ids[0] == tok.unk_token_id:
                continue
            angles = torch.tensor([2 * math.pi * n / p for p in periods])
            weight[ids[0], : 2 * pairs] = scale * torch.cat([angles.sin(), angles.cos()])
            numbers += 1
    return numbers


def smooth_rare_numbers(model, tok, rows, min_count: int) -> int:
    """Give number tokens the training prompts rarely showed an embedding interpolated (by
    value) between the nearest numbers they showed at least ``min_count`` times; returns
    how many were replaced.

    The test split's targets are values training never uses as targets, so above the
    largest given number many of them never appear in a prompt: their embeddings stay
    random, and the model reads such a target as noise (20.8% sampled accuracy on test
    targets against 47.9% on fresh questions with training targets). Numbers that are near
    in value are near in the trained embedding space (``init_value_embeddings`` starts them
    so), so the neighbours' blend is the embedding the model would have learned: 46.8% on
    test targets, same model, no further training.
    """
    import torch
    from collections import Counter

    if min_count <= 0:
        return 0
    # in prompts only: a number the model has only written (an intermediate result in an
    # answer or a check) is still one it has never read as a target
    counts = Counter(i for r in rows for i, y in zip(r["input_ids"], r["labels"]) if y == -100)
    ids = {n: tok.convert_tokens_to_ids(str(n)) for n in range(1000)}
    ids = {n: i for n, i in ids.items() if i is not None and i != tok.unk_token_id}
    known = [n for n in sorted(ids) if counts[ids[n]] >= min_count]
    if not known:
        return 0
    weight = model.get_input_embeddings().weight
    replaced = 0
    with torch.no_grad():
        for n in sorted(ids):
            if counts[ids[n]] >= min_count:
                continue
            k = bisect.bisect_left(known, n)
            lo, hi = known[max(k - 1, 0)], known[min(k, len(known) - 1)]
            w = (n - lo) / (hi - lo) if hi != lo else 0.0
            weight[ids[n]] = (1 - w) * weight[ids[lo]] + w * weight[ids[hi]]
            replaced += 1
    return replaced


def tokenizer_corpus(prompts, extra_texts: Sequence[str], examples: Sequence[Example]) -> list[str]:
    texts = list(prompts.variants.values()) + [prompts.reflection] + list(extra_texts)
    texts += [f"system\nuser\nassistant\n{prompts.system or ''}"] + [" ".join(CHECK_PHRASES)] * 100
    texts += [e.user + "\n" + e.assistant for e in examples]
    return texts


def _replies(backend, users: Sequence[str], n: int, max_new_tokens: int, seed: int) -> list[list[str]]:
    from skill_factory.generation.base import Sampling

    result = backend.generate([[{"role": "user", "content": u}] for u in users],
                              Sampling(n=n, temperature=1.0, max_new_tokens=max_new_tokens, seed=seed))
    return [[c.text for c in cs] for cs in result.completions]


def measure(model_dir: Path, model_cfg, prompts, bc) -> dict:
    """The quality bar, on held-out test-split questions (targets never trained on), with
    the same generation backend the sample and reflect stages use."""
    from skill_factory.generation.base import make_backend

    backend = make_backend(model_cfg, str(model_dir))
    names = sorted(prompts.variants)
    result: dict = {}
    own = []
    try:
        for num in EVAL_NUM_NUMBERS:
            size = bc.eval_questions if num == 3 else max(bc.eval_questions // 2, 1)
            task, qs = _questions(num, "test", size, bc.seed)
            users = [prompts.variants[names[i % len(names)]].format(**q.fields) for i, q in enumerate(qs)]
            replies = _replies(backend, users, bc.eval_samples, ANSWER_TOKENS, bc.seed)
            graded = [[task.grade(r, q.gold) for r in rs] for q, rs in zip(qs, replies)]
            flat = [c for g in graded for _, c in g]
            mixed = sum(1 for g in graded if 0 < sum(c for _, c in g) < len(g))
            by_variant: dict = {}
            for i, g in enumerate(graded):
                by_variant.setdefault(names[i % len(names)], []).extend(c for _, c in g)
            result[f"n{num}"] = {
                "questions": len(qs),
                "sampled_accuracy": sum(flat) / len(flat),
                "by_variant": {v: round(sum(cs) / len(cs), 4) for v, cs in by_variant.items()},
                "mixed_question_rate": mixed / len(qs),
                "well_formed_rate": sum(e is not None for g in graded for e, _ in g) / len(flat),
            }
            if num == 3:  # two own answers per question get a reflection each
                own = [(u, r, c) for u, rs, g in zip(users, replies, graded)
                       for r, (_, c) in zip(rs[:2], g[:2])]
        checks = _replies(backend, [prompts.reflection.format(question=u, response=r) for u, r, _ in own],
                          1, CHECK_TOKENS, bc.seed + 1)
    finally:
        backend.close()
    verdicts = [parse_verdict(c[0]) for c in checks]
    result["verdict_accuracy"] = sum(v == c for v, (_, _, c) in zip(verdicts, own)) / max(len(own), 1)
    result["verdict_rate"] = sum(v is not None for v in verdicts) / max(len(own), 1)
    return result


def _sample_own(model_dir: Path, model_cfg, users: Sequence[str], n: int, seed: int) -> list[list[str]]:
    from skill_factory.generation.base import make_backend

    backend = make_backend(model_cfg, str(model_dir))
    try:
        return _replies(backend, users, n, ANSWER_TOKENS, seed)
    finally:
        backend.close()


def build_tiny_model(bc, prompts, model_cfg, out_dir: Path, scratch: str | Path,
                     extra_texts: Sequence[str] = ()) -> dict:
    """Build, train, measure and save the tiny model into ``out_dir``; return its stats.

    Two phases: the solver learns to answer (``bc.steps``), then samples its own answers to
    fresh training questions, and learns to check them (``bc.check_steps``, check examples
    mixed with answer examples so the solver is not forgotten). ``scratch`` is a directory
    for intermediate files (nothing there is kept).
    """
    import torch

    t0 = time.perf_counter()
    scratch = Path(scratch)
    torch.set_num_threads(bc.torch_threads)
    torch.manual_seed(bc.seed)
    rng = random.Random(bc.seed)
    n_answers = bc.steps * bc.batch_size
    n_checks = int(bc.check_steps * bc.batch_size * bc.check_share)
    n_refresh = bc.check_steps * bc.batch_size - n_checks
    n_own = -(-n_checks // OWN_SAMPLES)
    # phase 2 draws from its own seed, so the solver's data do not depend on phase 2's size
    solver_qs = train_questions(n_answers, bc.four_number_rate, bc.seed)
    later = train_questions(n_refresh + n_own, bc.four_number_rate, bc.seed + 1)
    refresh_qs, own_qs = later[:n_refresh], later[n_refresh:]
    step_variants = [v for v in bc.step_form_variants if v in prompts.variants]
    solver = answer_examples(solver_qs, prompts.variants, bc.wrong_answer_rate, step_variants, rng)
    refresh = answer_examples(refresh_qs, prompts.variants, bc.wrong_answer_rate, step_variants, rng)

    tok = build_tokenizer(tokenizer_corpus(prompts, extra_texts, solver[:5000]))
    model = new_model(tok, bc)
    init_value_embeddings(model, tok, bc.value_features)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny model: %d parameters, vocabulary %d; phase 1: %d answer examples", n_params, len(tok),
             len(solver))
    t1 = time.perf_counter()
    rows = _encode(tok, solver, bc.max_position_embeddings)
    losses = _train(model, tok, rows, bc.steps, bc.learning_rate, bc, scratch / "solver-trainer", bc.seed)
    t2 = time.perf_counter()
    log.info("phase 1 (solver): %d steps in %.1f s", bc.steps, t2 - t1)

    check_losses, own_accuracy, mix = [], None, list(refresh)
    if n_checks:
        model.save_pretrained(scratch / "solver")
        tok.save_pretrained(scratch / "solver")
        names = sorted(prompts.variants)
        users = [prompts.variants[rng.choice(names)].format(**q.fields) for q in own_qs]
        replies = _sample_own(scratch / "solver", model_cfg, users, OWN_SAMPLES, bc.seed + 2)
        checks, own_accuracy = check_examples(users, own_qs, replies, prompts, bc.verdict_noise, rng)
        mix += checks[:n_checks]
        log.info("phase 2 (checks): %d checks of its own answers (%.0f%% right) + %d answer examples",
                 n_checks, 100 * own_accuracy, len(refresh))
    if bc.check_steps:
        rng.shuffle(mix)
        mix_rows = _encode(tok, mix, bc.max_position_embeddings)
        rows += mix_rows
        check_losses = _train(model, tok, mix_rows, bc.check_steps, bc.check_learning_rate, bc,
                              scratch / "check-trainer", bc.seed + 1)
        log.info("phase 2 (checks): %d steps in %.1f s", bc.check_steps, time.perf_counter() - t2)
    smoothed = smooth_rare_numbers(model, tok, rows, bc.rare_number_min_count)
    log.info("%d number tokens read fewer than %d times in training prompts take their neighbours' "
             "embeddings", smoothed, bc.rare_number_min_count)
    t3 = time.perf_counter()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    quality = measure(out_dir, model_cfg, prompts, bc)
    return {
        "parameters": n_params,
        "vocabulary": len(tok),
        "examples": {"answers": len(solver) + len(refresh), "checks": n_checks},
        "steps": bc.steps,
        "check_steps": bc.check_steps,
        "train_seconds": round(t3 - t1, 1),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "loss": [round(x, 4) for x in losses],
        "check_loss": [round(x, 4) for x in check_losses],
        "own_answer_accuracy_before_checks": own_accuracy,
        "smoothed_number_tokens": smoothed,
        "quality": quality,
    }
