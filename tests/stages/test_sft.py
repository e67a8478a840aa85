"""The sft stage with real LLaMA-Factory: presets, pre-flight, launch, dry run, CPU training.

Regenerate the golden file of the paper preset's yaml after an intended change:

    SF_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/stages/test_sft.py -k golden
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tiny_lm import shared_tiny_lm

import skill_factory.stages  # noqa: F401 - registers the stages
from skill_factory.config.validate import validate
from skill_factory.errors import ConfigError, SkillFactoryError
from skill_factory.llamafactory import launch as lf_launch
from skill_factory.llamafactory.emit import render_yaml
from skill_factory.llamafactory.preflight import PreflightError, preflight
from skill_factory.pipeline import (
    REGISTRY,
    Artifact,
    Runner,
    Stage,
    config_slice,
    fingerprint,
    plan,
)
from skill_factory.stages import sft as sft_stage

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "sft_paper_full.yaml"
PRESETS = ("paper_full", "paper_full_zero3", "paper_lora", "cpu")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def traces_rows(n: int = 24) -> list[dict]:
    rows = []
    for i in range(n):
        nums = [3 + i % 7, 5, 12]
        answer = f"({nums[0]} + {nums[1]}) * {nums[2]}"
        trace = (f"<think>\n<sample>\n{answer} = {(nums[0] + 5) * 12}\n<answer>{answer}</answer>\n</sample>\n"
                 f"<reflect>\nLooks right. <verdict>Correct</verdict>\n</reflect>\n</think>\n\n"
                 f"<answer>\n{answer}\n</answer>")
        rows.append({"question_id": f"q{i}", "format": "*C_full" if i % 2 else "0C", "n_samples": 1,
                     "conversations": [{"role": "user", "content": f"Use {nums} to make {(nums[0] + 5) * 12}."},
                                       {"role": "assistant", "content": trace}]})
    return rows


@pytest.fixture
def traces_file(tmp_path):
    path = tmp_path / "traces.parquet"
    pq.write_table(pa.Table.from_pylist(traces_rows()), path)
    return path


def fake_traces(ctx):
    """Stands in for the traces stage: its artifact layout (data/train-*.parquet)."""
    (ctx.out_dir / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(traces_rows()), ctx.out_dir / "data" / "train-00000-of-00001.parquet")
    return {"rows": 24}


STAGES = {"traces": Stage("traces", fake_traces, ("seed",), lambda cfg: ()), "sft": REGISTRY["sft"]}


@pytest.fixture
def cfg_for(make_cfg, traces_file):
    """The tiny random model under any model file: local tokenizer with a ChatML template."""
    def make(*overrides, model="tiny", dataset=True):
        base = [f"model={model}", f"model.path={shared_tiny_lm()}", "model.default_system=''"]
        if dataset:
            base.append(f"sft.dataset={traces_file}")
        return make_cfg(*base, *overrides)

    return make


def run(cfg, registry=None):
    cfg.stages = ["sft"]
    runner = Runner(cfg, Path(cfg.paths.artifacts), registry=registry or {"sft": REGISTRY["sft"]})
    return runner.run()["sft"]


# --- settings: preset x model resources -------------------------------------------------------

def test_null_preset_values_come_from_the_model(make_cfg):
    s15 = sft_stage.settings(make_cfg("model=qwen2_5_1_5b_instruct"))
    assert (s15.per_device_train_batch_size, s15.gradient_accumulation_steps, s15.cutoff_len, s15.zero_stage,
            s15.nnodes, s15.gpus_per_node) == (1, 1, 16384, 2, 1, 4)
    assert s15.deepspeed.endswith("conf/deepspeed/ds_z2.json")
    s7 = sft_stage.settings(make_cfg("model=qwen2_5_7b_instruct"))
    assert (s7.zero_stage, s7.gpus_per_node) == (3, 8) and s7.deepspeed.endswith("ds_z3.json")
    # a preset (or override) value wins over the model's
    mixed = sft_stage.settings(make_cfg("model=qwen2_5_7b_instruct", "sft.zero_stage=2", "sft.cutoff_len=4096"))
    assert (mixed.zero_stage, mixed.cutoff_len) == (2, 4096)
    assert sft_stage.settings(make_cfg("model=qwen2_5_1_5b_instruct", "sft=paper_full_zero3")).zero_stage == 3
    cpu = sft_stage.settings(make_cfg())
    assert (cpu.zero_stage, cpu.deepspeed, cpu.gpus_per_node, cpu.per_device_train_batch_size) == (0, None, 0, 8)


def test_model_files_select_their_sft_preset(make_cfg):
    assert make_cfg().sft.use_cpu is True
    qwen = make_cfg("model=qwen2_5_1_5b_instruct")
    assert (qwen.sft.use_cpu, qwen.sft.learning_rate, qwen.sft.bf16) == (False, 1e-6, True)
    assert make_cfg("model=qwen2_5_1_5b_instruct", "sft=paper_lora").sft.finetuning_type == "lora"


# --- fingerprint and upstream ---------------------------------------------------------------------

def sft_fingerprint(cfg, upstream=None):
    st = REGISTRY["sft"]
    return fingerprint(st, config_slice(cfg, st.config_keys), upstream or {})


def test_upstream_is_traces_unless_a_dataset_is_given(make_cfg, traces_file):
    planned = plan(make_cfg("stages=[sft]"), {**REGISTRY, **STAGES})
    assert set(planned) == {"bootstrap", "traces", "sft"} and planned[-1] == "sft"
    assert REGISTRY["sft"].upstream_of(make_cfg(f"sft.dataset={traces_file}")) == ("bootstrap",)
    assert REGISTRY["sft"].upstream_of(make_cfg("model=qwen2_5_1_5b_instruct", f"sft.dataset={traces_file}")) == ()


def test_fingerprint_ignores_where_it_runs_but_not_what_it_trains(cfg_for, traces_file):
    base = sft_fingerprint(cfg_for())
    assert sft_fingerprint(cfg_for("sft.node_rank=1", "sft.master_addr=h", "sft.master_port=1234",
                                   "sft.cpu_threads=2", "sft.strict_template=false")) == base
    assert sft_fingerprint(cfg_for("sft.dry_run=true")) != base
    assert sft_fingerprint(cfg_for("sft.learning_rate=0.5")) != base
    assert sft_fingerprint(cfg_for("model.resources.gpus_per_node=2")) != base
    os.utime(traces_file, ns=(1, 1))  # rewritten data -> new fingerprint
    assert sft_fingerprint(cfg_for()) != base


# --- validation up front ---------------------------------------------------------------------------

def problems_of(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    return str(err.value)


def test_brought_data_is_validated_up_front(cfg_for, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}))
    text = problems_of(cfg_for("stages=[sft]", f"sft.dataset={bad}", dataset=False))
    assert "sft.dataset: 1 of 1 conversations" in text and "row 0 turn 1 has role 'gpt'" in text
    assert "sft.dataset: no such file or folder" in problems_of(
        cfg_for("stages=[sft]", f"sft.dataset={tmp_path / 'nope.parquet'}", dataset=False))


def test_config_problems_are_collected(cfg_for):
    text = problems_of(cfg_for("stages=[sft]", "sft.cutoff_len=4096", "sft.zero_stage=2", "+sft.extra.output_dir=/x",
                               "+sft.extra.learning_rate=1"))
    assert "sft.cutoff_len: 4096 is longer than model.max_length=512" in text
    assert "sft.zero_stage: DeepSpeed needs GPUs" in text
    assert "sft.extra.output_dir: is written by the sft stage itself" in text
    assert "sft.extra.learning_rate: is written by the sft stage itself (fix: use sft.learning_rate)" in text
    assert "sft.zero_stage: 1 is not one of 0, 2, 3" in problems_of(cfg_for("sft.zero_stage=1"))


def test_gpu_training_on_a_machine_without_gpus_fails_up_front(cfg_for):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    text = problems_of(cfg_for("stages=[sft]", model="qwen2_5_1_5b_instruct"))
    assert "sft.use_cpu: training on GPUs needs 4 per node; this machine has 0" in text
    assert "sft.zero_stage: DeepSpeed ZeRO-2 needs the deepspeed package" in text
    validate(cfg_for("stages=[sft]", "sft.dry_run=true", model="qwen2_5_1_5b_instruct"))  # a dry run is fine
    assert "sft.master_addr: 2-node training needs a rendezvous host" in problems_of(
        cfg_for("stages=[sft]", "sft.dry_run=true", "sft.nnodes=2", model="qwen2_5_1_5b_instruct"))


# --- pre-flight with real LLaMA-Factory ---------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_passes_the_preflight(preset, cfg_for):
    cfg = cfg_for(f"sft={preset}", "sft.dry_run=true", model="qwen2_5_1_5b_instruct")
    art = run(cfg)
    counts = art.counts
    assert counts["dry_run"] is True
    checks = counts["preflight"]["checks"]
    assert checks["parser"] == "ok"
    assert checks["template"] == "ok (renders exactly as the tokenizer's chat template)"
    assert "24 rows converted by LLaMA-Factory's sharegpt converter" in checks["dataset"]
    assert counts["preflight"]["tokens"]["rows"] == 24 and counts["preflight"]["tokens"]["over_cutoff"] == 0
    info = json.loads((art.path / "dataset_info.json").read_text())
    assert info == {"skillfactory_sft": {"file_name": "data/train.parquet", "formatting": "sharegpt",
                                         "columns": {"messages": "conversations"},
                                         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                                  "assistant_tag": "assistant", "system_tag": "system"}}}
    if preset == "cpu":
        assert "deepspeed" not in checks and counts["launch"]["env"] == {"OMP_NUM_THREADS": "1",
                                                                        "MKL_NUM_THREADS": "1"}
    else:
        assert checks["deepspeed"].startswith("ok") and (art.path / "ds_config.json").exists()
    if preset == "paper_lora":
        assert (art.path / "export.yaml").exists() and checks["export"] == "ok"
    with pytest.raises(SkillFactoryError, match="is a dry run and holds no checkpoint"):
        sft_stage.sft_checkpoint(art)


def emitted(cfg, tmp_path) -> Path:
    """Write the stage's files for ``cfg`` into a scratch directory (no pre-flight)."""
    out = tmp_path / "emitted"
    out.mkdir(parents=True)
    sft_stage.write_files(cfg, sft_stage.settings(cfg), {}, out, "f" * 16)
    return out / "train.yaml"


def test_a_bogus_key_fails_preflight_with_our_message(cfg_for, tmp_path):
    cfg = cfg_for("+sft.extra.lerning_rate=0.1", "sft.dry_run=true")
    with pytest.raises(PreflightError) as err:
        preflight(emitted(cfg, tmp_path))
    text = str(err.value)
    assert text.startswith("sft pre-flight failed for ") and "1 problem(s)" in text
    assert "parser: LLaMA-Factory's argument parser rejects the yaml: Some keys are not used by the " \
           "HfArgumentParser: ['lerning_rate']" in text
    # through the stage: one SkillFactoryError, and no finished artifact is left behind
    with pytest.raises(SkillFactoryError, match="lerning_rate"):
        run(cfg)
    assert not list((Path(cfg.paths.artifacts) / "sft").glob("*/manifest.json"))


def test_a_wrong_template_fails_preflight(cfg_for, tmp_path):
    with pytest.raises(PreflightError, match=r"template: 'llama3' needs tokens the tokenizer of .* lacks: "
                                             r".*<\|eot_id\|>.*fix: set model.template"):
        preflight(emitted(cfg_for("model.template=llama3"), tmp_path))


def test_a_default_system_the_chat_template_lacks_fails_preflight(cfg_for, tmp_path):
    # the qwen template's own default system prompt; the tiny tokenizer's chat template has none
    with pytest.raises(PreflightError, match=r"(?s)renders a conversation differently.*You are Qwen.*"
                                             r"fix: set model.default_system"):
        preflight(emitted(cfg_for("model.default_system=null"), tmp_path))
    report = preflight(emitted(cfg_for("model.default_system=null", "sft.strict_template=false"),
                               tmp_path / "lenient"), strict_template=False)
    assert report["checks"]["template"].startswith("warning")


def test_the_models_chat_template_kwargs_reach_the_template_check(make_cfg, traces_file, tmp_path):
    """A template that writes today's date unless date_string is passed (as Llama 3.2's) matches
    the pinned default_system only with the model's chat_template_kwargs, which the stage passes."""
    from tiny_lm import DATED_CHAT_TEMPLATE, build_tiny_lm

    path = build_tiny_lm(tmp_path / "dated", chat_template=DATED_CHAT_TEMPLATE)
    cfg = make_cfg(f"model.path={path}", f"sft.dataset={traces_file}", "sft.dry_run=true")
    cfg.model.default_system = "Today Date: 26 Jul 2024\n\n"
    with pytest.raises(PreflightError, match=r"(?s)renders a conversation differently.*Today Date: \d\d \w+ \d{4}"):
        preflight(emitted(cfg, tmp_path))  # no kwargs: the tokenizer writes today's date
    cfg.model.chat_template_kwargs = {"date_string": "26 Jul 2024"}
    checks = run(cfg).counts["preflight"]["checks"]
    assert checks["template"] == "ok (renders exactly as the tokenizer's chat template)"


def test_llamafactory_parses_a_null_template_from_the_tokenizers_chat_template():
    """LLaMA-Factory 0.9.5: data_args.template None -> parse_template(tokenizer), which encodes a
    user/assistant turn exactly as the tokenizer's own chat template (what the OLMo 2 file relies on)."""
    import copy

    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from tiny_lm import TULU_CHAT_TEMPLATE, build_tokenizer

    # OLMo 2's Tulu chat template, <|endoftext|> as bos and eos
    tok = build_tokenizer(chat_template=TULU_CHAT_TEMPLATE, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    template = get_template_and_fix_tokenizer(copy.deepcopy(tok), DataArguments(template=None))
    conv = [{"role": "user", "content": "Use [3, 5, 12] to make 96."},
            {"role": "assistant", "content": "<answer>(3 + 5) * 12</answer>"}]
    prompt, response = template.encode_oneturn(tok, conv)
    text = tok.apply_chat_template(conv, tokenize=False)
    assert text == ("<|endoftext|><|user|>\nUse [3, 5, 12] to make 96.\n<|assistant|>\n"
                    "<answer>(3 + 5) * 12</answer><|endoftext|>")
    assert prompt + response == tok(text, add_special_tokens=False)["input_ids"]
    generation = tok.apply_chat_template(conv[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == tok(generation, add_special_tokens=False)["input_ids"]
    assert response[-1] == tok.eos_token_id  # the model learns to stop


@pytest.fixture
def tulu_lm(tmp_path):
    from tiny_lm import TULU_CHAT_TEMPLATE, build_tiny_lm

    return build_tiny_lm(tmp_path / "tulu", chat_template=TULU_CHAT_TEMPLATE, eos_token="<|endoftext|>",
                         bos_token="<|endoftext|>")


def test_a_null_template_is_left_out_of_the_yaml_and_passes_preflight(make_cfg, traces_file, tulu_lm, tmp_path):
    import yaml

    cfg = make_cfg("model=olmo2_7b_instruct", f"model.path={tulu_lm}", f"sft.dataset={traces_file}",
                   "sft.finetuning_type=lora", "sft.lora_target=all")
    assert cfg.model.template is None
    path = emitted(cfg, tmp_path)
    assert "template" not in yaml.safe_load(path.read_text())
    assert "template" not in yaml.safe_load((path.parent / sft_stage.EXPORT_YAML).read_text())
    report = preflight(path, export_yaml=path.parent / sft_stage.EXPORT_YAML)
    assert report["checks"]["template"] == "ok (renders exactly as the tokenizer's chat template)"
    assert report["checks"]["export"] == "ok"


def test_a_parsed_template_that_renders_the_system_turn_otherwise_fails_preflight(make_cfg, tulu_lm, tmp_path):
    """parse_template cuts the user slot, BOS included, out of a rendering without a system turn;
    a tokenizer whose encode("") has no BOS then gets it twice before a system turn. The row check
    reports it (the sample conversation, which has none, passes)."""
    rows = [{"conversations": [{"role": "system", "content": "Be brief."}, *r["conversations"]]}
            for r in traces_rows(4)]
    data = tmp_path / "with_system.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    cfg = make_cfg("model=olmo2_7b_instruct", f"model.path={tulu_lm}", f"sft.dataset={data}")
    with pytest.raises(PreflightError, match=r"(?s)the template LLaMA-Factory parses from the chat template .*"
                                             r"renders the first training row's prompt differently.*"
                                             r"Be brief.\\n<\|endoftext\|><\|user\|>"):
        preflight(emitted(cfg, tmp_path))


def test_a_null_template_needs_a_chat_template(make_cfg, traces_file, tmp_path):
    from tiny_lm import build_tiny_lm

    path = build_tiny_lm(tmp_path / "plain", chat_template=None)
    cfg = make_cfg("model=olmo2_7b_instruct", f"model.path={path}", f"sft.dataset={traces_file}")
    with pytest.raises(PreflightError, match="model.template is null, but the tokenizer .* has no chat template"):
        preflight(emitted(cfg, tmp_path))


def test_preflight_leaves_the_template_registry_alone(cfg_for, tmp_path):
    from llamafactory.data.template import TEMPLATES

    preflight(emitted(cfg_for(), tmp_path))
    assert TEMPLATES["qwen"].default_system.startswith("You are Qwen")


# --- the paper preset, exactly ----------------------------------------------------------------------

def paper_yaml(make_cfg) -> str:
    cfg = make_cfg("model=qwen2_5_1_5b_instruct")
    sections = sft_stage.train_sections(cfg, sft_stage.settings(cfg), model_path=cfg.model.path,
                                        dataset_dir="<artifact>", output_dir="<artifact>/model",
                                        deepspeed="<artifact>/ds_config.json", report_to="none",
                                        run_name="<run>-sft")
    return render_yaml(sections, header=sft_stage.YAML_HEADER)


def test_golden_paper_yaml(make_cfg):
    text = paper_yaml(make_cfg)
    if os.environ.get("SF_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), ("the emitted paper yaml changed; review the diff and regenerate with "
                                        "SF_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/stages/test_sft.py -k golden")


def test_paper_yaml_matches_the_release_but_for_the_rejected_key(make_cfg):
    import yaml

    ours = yaml.safe_load(paper_yaml(make_cfg))
    release = {"adam_beta1": 0.9, "adam_beta2": 0.95, "bf16": True, "cutoff_len": 16384,
               "dataloader_num_workers": 0, "ddp_timeout": 180000000, "do_train": True, "finetuning_type": "full",
               "gradient_accumulation_steps": 1, "gradient_checkpointing": True, "learning_rate": 1.0e-6,
               "logging_steps": 10, "lr_scheduler_type": "cosine", "num_train_epochs": 1, "overwrite_cache": True,
               "overwrite_output_dir": True, "per_device_train_batch_size": 1, "plot_loss": True,
               "preprocessing_num_workers": 1, "save_only_model": True, "stage": "sft", "template": "qwen",
               "weight_decay": 0.0001, "model_name_or_path": "Qwen/Qwen2.5-1.5B-Instruct", "max_samples": 1000000,
               "save_strategy": "steps", "save_steps": 100000, "save_total_limit": 5}
    assert {k: ours[k] for k in release} == release
    assert ours["warmup_steps"] == 0.05 and "warmup_ratio" not in ours and "enable_masked_ranges" not in ours


# --- dry run of the paper setting on a machine without a GPU --------------------------------------------

def test_dry_run_of_the_paper_setting(make_cfg, traces_file):
    from skill_factory.cli import run as cli_run

    cfg = make_cfg("model=qwen2_5_1_5b_instruct", f"sft.dataset={traces_file}", "sft.dry_run=true", "stages=[sft]")
    record = cli_run(cfg)
    art_dir = Path(record["sft"]["path"])
    manifest = json.loads((art_dir / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["launch"]["argv"] == [lf_launch.llamafactory_cli(), "train", str(art_dir / "train.yaml")]
    assert counts["launch"]["env"] == {"FORCE_TORCHRUN": "1", "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "4"}
    assert counts["preflight"]["checks"]["template"].startswith("skipped: the tokenizer of Qwen/Qwen2.5-1.5B-Instruct "
                                                                "is not on this machine")
    assert counts["global_batch"] == 4 and counts["data"]["rows"] == 24
    assert counts["data"]["rows_by_format"] == {"*C_full": 12, "0C": 12}
    script = (art_dir / "launch.sh").read_text()
    assert "export FORCE_TORCHRUN=1" in script and "export NPROC_PER_NODE=4" in script
    assert json.loads((art_dir / "launch.json").read_text())["argv"] == counts["launch"]["argv"]
    import yaml

    emitted_yaml = yaml.safe_load((art_dir / "train.yaml").read_text())
    assert emitted_yaml["deepspeed"] == str(art_dir / "ds_config.json")
    assert emitted_yaml["output_dir"] == str(art_dir / "model") and emitted_yaml["dataset_dir"] == str(art_dir)


def test_wandb_logger_reports_to_the_same_project_and_group(cfg_for, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = cfg_for("logger=wandb", "logger.wandb.project=sf-proj", "logger.wandb.group=sweep-3")
    assert sft_stage.wandb_env(cfg) == {"WANDB_PROJECT": "sf-proj", "WANDB_RUN_GROUP": "sweep-3",
                                        "WANDB_MODE": "offline", "WANDB_DIR": cfg.paths.run_dir}
    import yaml

    assert yaml.safe_load(emitted(cfg, tmp_path).read_text())["report_to"] == "wandb"
    launch = json.loads((tmp_path / "emitted" / "launch.json").read_text())
    assert launch["env"]["WANDB_PROJECT"] == "sf-proj" and launch["env"]["WANDB_RUN_GROUP"] == "sweep-3"


def test_a_hub_dataset_in_an_offline_dry_run_is_named_for_llamafactory(cfg_for, tmp_path, monkeypatch):
    from skill_factory import rawdata

    monkeypatch.setattr(rawdata, "hub_reachable", lambda timeout=3.0: False)
    cfg = cfg_for("sft.dataset=SkillFactory/SFT-example", "sft.dataset_subset=sft_train", "sft.dry_run=true",
                  dataset=False)
    report = preflight(emitted(cfg, tmp_path))
    info = json.loads((tmp_path / "emitted" / "dataset_info.json").read_text())
    assert info["skillfactory_sft"] == {"hf_hub_url": "SkillFactory/SFT-example", "split": "train",
                                        "formatting": "sharegpt", "subset": "sft_train",
                                        "columns": {"messages": "conversations"},
                                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                                 "assistant_tag": "assistant", "system_tag": "system"}}
    assert "hf_hub, loaded by LLaMA-Factory at train time" in report["checks"]["dataset"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(SkillFactoryError, match="the Hugging Face Hub cannot be reached"):
        sft_stage.emit_data(cfg_for("sft.dataset=SkillFactory/SFT-example", dataset=False), {}, tmp_path / "real")


# --- real training on CPU ---------------------------------------------------------------------------------

def test_tiny_model_trains_through_the_real_cli(cfg_for, caplog):
    """traces -> sft on CPU through ``llamafactory-cli train``; the checkpoint reloads and generates."""
    import logging

    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = cfg_for("stages=[sft]", "sft.max_steps=4", "sft.logging_steps=1", "sft.per_device_train_batch_size=4",
                  dataset=False)
    validate(cfg, {**REGISTRY, **STAGES})
    with caplog.at_level(logging.INFO):
        art = Runner(cfg, Path(cfg.paths.artifacts), registry=STAGES).run()["sft"]
    counts = art.counts
    assert counts["dry_run"] is False and counts["steps"] == 4
    assert counts["loss"]["points"] == 4 and counts["loss"]["first"] > 0 and len(counts["loss"]["curve"]) == 4
    assert counts["tokens_per_second"] > 0 and counts["data"]["source"].startswith("traces:")
    assert any(r.getMessage().startswith("[llamafactory] ") for r in caplog.records)
    assert (art.path / "llamafactory.log").stat().st_size > 0
    ckpt = sft_stage.sft_checkpoint(art)
    assert ckpt == counts["checkpoint"] == str(art.path / "model")
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    ids = tok.apply_chat_template([{"role": "user", "content": "Use [3, 5, 12] to make 96."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    # a rerun reuses the finished artifact
    again = Runner(cfg, Path(cfg.paths.artifacts), registry=STAGES).run()["sft"]
    assert again.path == art.path


def test_a_failing_launch_is_one_error_naming_the_kept_log(cfg_for, tmp_path, monkeypatch):
    fake = tmp_path / "llamafactory-cli"
    fake.write_text("#!/bin/sh\necho 'Traceback: CUDA out of memory'\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(lf_launch, "llamafactory_cli", lambda: str(fake))
    cfg = cfg_for()
    with pytest.raises(SkillFactoryError, match=r"exited with code 3; its log: .*sft-failed-\w+/llamafactory.log"):
        run(cfg)
    kept = next(Path(cfg.paths.run_dir).glob("sft-failed-*"))
    assert "CUDA out of memory" in (kept / "llamafactory.log").read_text() and (kept / "train.yaml").exists()


@pytest.mark.slow
def test_lora_trains_and_merges_on_cpu(cfg_for):
    cfg = cfg_for("sft.finetuning_type=lora", "sft.learning_rate=1e-3", "sft.max_steps=2", "sft.lora_rank=4")
    art = run(cfg)
    ckpt = sft_stage.sft_checkpoint(art)
    assert ckpt.endswith("/merged") and (Path(art.counts["adapter"]) / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt)


def test_sft_checkpoint_checks_the_manifest(tmp_path):
    art = Artifact("sft", tmp_path, "f", {"counts": {"dry_run": False, "checkpoint_dir": "model"}})
    with pytest.raises(SkillFactoryError, match="is missing"):
        sft_stage.sft_checkpoint(art)
    (tmp_path / "model").mkdir()
    assert sft_stage.sft_checkpoint(art) == str(tmp_path / "model")
    assert dataclasses.is_dataclass(sft_stage.Settings)


@pytest.mark.slow
def test_wandb_offline_run_of_llamafactory_joins_the_group(cfg_for, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = cfg_for("logger=wandb", "logger.wandb.project=sf-proj", "logger.wandb.group=sweep-7", "sft.max_steps=2")
    run(cfg)
    runs = list((Path(cfg.paths.run_dir) / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    data = runs[0].read_bytes()
    assert b"sf-proj" in data and b"sweep-7" in data and b"run-sft" in data
