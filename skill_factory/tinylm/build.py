"""Build, train and measure the embedded tiny Countdown model.

One training run on a shuffled mix of answer examples (every prompt variant, right and
plausibly wrong answers) and check examples (the reflection prompt on a right or wrong
answer -> recomputed arithmetic and a verdict). The wrong answers in both are drawn the same
way, so the checks are trained on the kind of mistake the model itself learns to make; a
verifier trained only on unlike negatives learns to call everything Correct.

Everything runs on CPU with transformers' ``Trainer``; the result is an ordinary Llama
folder (``config.json``, weights, tokenizer, chat template) that every later stage loads
like a hub model.

    stats = build_tiny_model(cfg.model.bootstrap, cfg.prompts, cfg.model, out_dir, scratch=tmp)
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from skill_factory.tinylm.data import CHECK_PHRASES, STEP_VARIANTS, check_text, format_answer, wrong_answer
from skill_factory.tinylm.tokenizer import build_tokenizer
from skill_factory.verdicts import parse_verdict

log = logging.getLogger(__name__)

# Held-out quality measurement (test split: targets disjoint from training targets).
EVAL_NUM_NUMBERS = (3, 4)
ANSWER_TOKENS = 48
CHECK_TOKENS = 64


@dataclass
class Example:
    user: str
    assistant: str


def _questions(num_numbers: int, split: str, size: int, seed: int):
    from skill_factory.tasks import build_task

    task = build_task("countdown", num_numbers=num_numbers)
    return task, task.questions(split, size, seed=seed)


def _weighted_train_questions(size: int, four_rate: float, seed: int):
    """Training questions, 3- and 4-number, with * and / problems weighted up (a tiny
    model is weakest there)."""
    rng = random.Random(seed)
    n4 = int(round(size * four_rate))
    out = []
    for num, want in ((3, size - n4), (4, n4)):
        task, pool = _questions(num, "train", int(want * 1.8) + 10, seed)
        kept = [q for q in pool if any(op in q.meta["solution"] for op in "*/") or rng.random() < 0.45]
        out += kept[:want]
    rng.shuffle(out)
    return out


def answer_examples(questions, variants: dict, wrong_rate: float, rng: random.Random):
    names = sorted(variants)
    out = []
    for q in questions:
        variant = rng.choice(names)
        step_form = variant in STEP_VARIANTS
        m = q.meta
        answer = None
        if rng.random() < wrong_rate:
            answer = wrong_answer(rng, m["numbers"], m["target"], step_form)
        if answer is None:
            answer = format_answer(m["solution"], m["steps"], step_form)
        out.append(Example(variants[variant].format(**q.fields), answer))
    return out


def check_examples(questions, prompts, bc, rng: random.Random) -> list[Example]:
    """Check examples of right and wrong answers, wrong ones drawn like the answer
    examples' (the right numbers, a missed target): the mistakes the model itself learns
    to make. A share ``verdict_noise`` of verdicts is flipped."""
    task = _questions(3, "train", 0, bc.seed)[0]  # Countdown's score reads all it needs from the gold
    out = []
    for q, answer in zip(questions, answer_examples(questions, prompts.variants, 0.5, rng)):
        m = q.meta
        body = answer.assistant
        inner = body[len("<answer>"):-len("</answer>")].strip()
        correct = task.score(inner, q.gold)
        verdict = correct if rng.random() >= bc.verdict_noise else not correct
        out.append(Example(prompts.reflection.format(question=answer.user, response=body),
                           check_text(inner, m["numbers"], m["target"], verdict)))
    return out


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


def _train(model, tok, rows, steps: int, bc, out_dir, seed: int):
    from transformers import Trainer, TrainingArguments

    class AnswerOnlyTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return _answer_only_loss(model, inputs)

    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=bc.batch_size,
        learning_rate=bc.learning_rate,
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
            result[f"n{num}"] = {
                "questions": len(qs),
                "sampled_accuracy": sum(flat) / len(flat),
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


def build_tiny_model(bc, prompts, model_cfg, out_dir: Path, scratch: str | Path,
                     extra_texts: Sequence[str] = ()) -> dict:
    """Build, train, measure and save the tiny model into ``out_dir``; return its stats.

    ``scratch`` is a directory for the trainer's own files (nothing there is kept).
    """
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(bc.torch_threads)
    torch.manual_seed(bc.seed)
    rng = random.Random(bc.seed)
    n_checks = int(bc.train_examples * bc.verify_rate)
    questions = _weighted_train_questions(bc.train_examples, bc.four_number_rate, bc.seed)
    examples = answer_examples(questions[n_checks:], prompts.variants, bc.wrong_answer_rate, rng)
    examples += check_examples(questions[:n_checks], prompts, bc, rng)
    rng.shuffle(examples)

    tok = build_tokenizer(tokenizer_corpus(prompts, extra_texts, examples[:5000]))
    model = new_model(tok, bc)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny model: %d parameters, vocabulary %d, %d examples", n_params, len(tok), len(examples))
    rows = _encode(tok, examples, bc.max_position_embeddings)
    t1 = time.perf_counter()
    losses = _train(model, tok, rows, bc.steps, bc, scratch, bc.seed)
    train_seconds = time.perf_counter() - t1
    log.info("trained %d steps in %.1f s", bc.steps, train_seconds)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    quality = measure(out_dir, model_cfg, prompts, bc)
    return {
        "parameters": n_params,
        "vocabulary": len(tok),
        "examples": len(examples),
        "steps": bc.steps,
        "train_seconds": round(train_seconds, 1),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "loss": [round(x, 4) for x in losses],
        "quality": quality,
    }
