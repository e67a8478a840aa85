"""The ``task`` config group: schema, yaml, semantic checks, building the task."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from skill_factory.config.problems import Problems
from skill_factory.errors import SkillFactoryError
from skill_factory.tasks import Countdown, CountdownParams, TaskConfig, build_task, check, get_task, task_names

REPO = Path(__file__).resolve().parents[2]
TASK_YAMLS = sorted((REPO / "conf" / "task").glob("*.yaml"))


def test_structured_schema_defaults_are_the_paper_setting():
    cfg = OmegaConf.structured(TaskConfig)
    assert cfg.name == "countdown" and cfg.train_size == 8000
    assert cfg.countdown.num_numbers == 3 and cfg.countdown.max_number == 100
    task = get_task(OmegaConf.to_object(cfg))
    assert isinstance(task, Countdown) and task.params == CountdownParams()
    assert isinstance(get_task(cfg), Countdown)  # a DictConfig works too


@pytest.mark.parametrize("path", TASK_YAMLS, ids=lambda p: p.name)
def test_task_yamls_validate_against_the_schema(path):
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first.startswith("# skillfactory task="), "the file must open with the command that runs it"
    raw = OmegaConf.load(path)
    assert list(raw.pop("defaults")) == ["_schema", "_self_"]
    cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), raw)
    problems = Problems()
    check(cfg, problems)
    assert not problems, problems.items
    task = get_task(OmegaConf.to_object(cfg))
    assert task.questions("train", 3, seed=cfg.seed)


def test_typos_fail_at_merge_time():
    with pytest.raises((ConfigKeyError, ValidationError)):
        OmegaConf.merge(OmegaConf.structured(TaskConfig), {"countdown": {"num_numbrs": 4}})
    with pytest.raises(ValidationError):
        OmegaConf.merge(OmegaConf.structured(TaskConfig), {"train_size": "many"})


def test_check_collects_every_problem_with_dotted_keys():
    cfg = OmegaConf.structured(TaskConfig)
    cfg.train_size = -1
    cfg.countdown.min_number = 50
    cfg.countdown.max_number = 10
    cfg.countdown.num_numbers = 1
    cfg.longmult.digits = 0
    cfg.letter_countdown.max_word_length = 2
    cfg.acronym.test_fraction = 1.5
    cfg.template = "Reach {target} with {numbrs}"
    problems = Problems()
    check(cfg, problems, key="task")
    keys = {p.key for p in problems.items}
    assert {
        "task.train_size",
        "task.countdown.max_number",
        "task.countdown.num_numbers",
        "task.longmult.digits",
        "task.letter_countdown.max_word_length",
        "task.acronym.test_fraction",
        "task.template",
    } <= keys
    assert all(p.what and p.fix for p in problems.items)


def test_check_unknown_task_name():
    problems = Problems()
    check(TaskConfig(name="chess"), problems)
    assert [p.key for p in problems.items] == ["task.name"]
    assert "countdown" in problems.items[0].fix
    with pytest.raises(SkillFactoryError):
        get_task(TaskConfig(name="chess"))


def test_every_task_is_configurable_and_buildable():
    for name in task_names():
        cfg = TaskConfig(name=name)
        problems = Problems()
        check(cfg, problems)
        assert not problems, (name, problems.items)
        assert get_task(cfg).name == name
        assert build_task(name).name == name


def test_template_override_reaches_the_task():
    cfg = TaskConfig(template="Make {target} from {numbers}.")
    task = get_task(cfg)
    q = task.questions("train", 1)[0]
    assert task.render(q) == f"Make {q.fields['target']} from {q.fields['numbers']}."


def test_tasks_package_imports_no_heavy_engine():
    code = (
        "import sys, skill_factory.tasks, skill_factory.tasks.batch\n"
        "heavy = [m for m in ('torch', 'transformers', 'verl', 'datasets', 'vllm', 'pyarrow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


LIBRARY_FILES = sorted((REPO / "skill_factory" / "tasks").glob("*.py")) + [REPO / "rewards" / "answer_tag.py"]


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: p.name)
def test_no_eval_exec_or_compile_in_verifiers_or_reward(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name):
                name = fn.id
            elif isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id == "builtins":
                name = fn.attr
            else:
                continue  # e.g. re.compile, which compiles a regex, not code
            assert name not in {"eval", "exec", "compile", "__import__"}, f"{path.name}:{node.lineno} calls {name}"
        if isinstance(node, ast.Name) and node.id in {"eval", "exec"}:
            raise AssertionError(f"{path.name}:{node.lineno} refers to {node.id}")
