"""Our LLaMA-Factory layer without training: data normalisation, dataset_info merge, launch.

The pre-flight against real LLaMA-Factory and the real CLI training run are in
tests/stages/test_sft.py, next to the stage that uses them.
"""
from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys

import pyarrow as pa
import pytest

from skill_factory.config.schema import ShareGPTColumns
from skill_factory.errors import SkillFactoryError
from skill_factory.llamafactory import emit
from skill_factory.llamafactory.emit import (
    SettingError,
    detect_layout,
    merge_dataset_info,
    normalise,
)
from skill_factory.llamafactory.launch import (
    Launch,
    Topology,
    build_launch,
    expand_nodelist,
    resolve_topology,
    run_streamed,
)

CLI = "/venv/bin/llamafactory-cli"
YAML = "/art/sft/abc/train.yaml"


def conv(*turns, role="role", content="content"):
    return [{role: r, content: c} for r, c in turns]


# --- normalisation ---------------------------------------------------------------------------

def test_role_content_layout_passes_through():
    table = pa.Table.from_pylist([{"conversations": conv(("user", "q"), ("assistant", "a")), "format": "*C"},
                                  {"conversations": conv(("system", "s"), ("user", "q"), ("assistant", "a"),
                                                         ("user", "q2"), ("assistant", "a2")), "format": "0C"}])
    layout = detect_layout(table, ShareGPTColumns())
    out, stats = normalise(table, layout)
    assert out.column_names == ["conversations"]
    assert out["conversations"].to_pylist() == table["conversations"].to_pylist()
    assert stats["rows"] == 2 and stats["messages"] == 7
    assert stats["rows_by_format"] == {"*C": 1, "0C": 1}


def test_original_sharegpt_spelling_is_rewritten():
    table = pa.Table.from_pylist([{"messages": conv(("human", "q"), ("gpt", "a"), role="from", content="value")}])
    layout = detect_layout(table, ShareGPTColumns())
    assert (layout.messages, layout.role_tag, layout.user_tag, layout.assistant_tag) == ("messages", "from",
                                                                                          "human", "gpt")
    out, _ = normalise(table, layout)
    assert out["conversations"].to_pylist() == [conv(("user", "q"), ("assistant", "a"))]


def test_explicit_columns_map_unusual_names():
    table = pa.Table.from_pylist([{"chat": [{"speaker": "me", "text": "q"}, {"speaker": "bot", "text": "a"}]}])
    cols = ShareGPTColumns(messages="chat", role_tag="speaker", content_tag="text", user_tag="me", assistant_tag="bot")
    out, _ = normalise(table, detect_layout(table, cols))
    assert out["conversations"].to_pylist() == [conv(("user", "q"), ("assistant", "a"))]


@pytest.mark.parametrize("turns,reason", [
    ((("user", "q"),), "has no user/assistant pair"),
    ((("assistant", "a"), ("user", "q")), "turn 1 has role 'assistant'"),
    ((("user", "q"), ("assistant", "a"), ("user", "q2")), "ends with a user turn"),
    ((("user", "q"), ("assistant", "  ")), "has an empty assistant turn"),
    ((("user", "q"), ("tool", "x")), "turn 2 has role 'tool'"),
])
def test_a_broken_row_is_named(turns, reason):
    good = {"conversations": conv(("user", "q"), ("assistant", "a"))}
    table = pa.Table.from_pylist([good, {"conversations": conv(*turns)}, good])
    with pytest.raises(SettingError, match=rf"1 of 3 conversations.*row 1 {reason}") as err:
        normalise(table, detect_layout(table, ShareGPTColumns()))
    assert err.value.key == "sft.dataset" and "sft.columns" in err.value.fix


def test_missing_or_mistyped_column_is_explained():
    with pytest.raises(SettingError, match="no conversations column conversations or messages; columns: text"):
        detect_layout(pa.Table.from_pylist([{"text": "hi"}]), ShareGPTColumns())
    with pytest.raises(SettingError, match="not a list of messages"):
        detect_layout(pa.Table.from_pylist([{"conversations": "hi"}]), ShareGPTColumns())
    with pytest.raises(SettingError, match="no role key"):
        detect_layout(pa.Table.from_pylist([{"conversations": [{"who": "user", "content": "q"}]}]), ShareGPTColumns())


# --- dataset_info.json merge ------------------------------------------------------------------

@pytest.fixture
def artifact(tmp_path):
    art = tmp_path / "artifact"
    (art / "data").mkdir(parents=True)
    (art / "data" / "train.parquet").write_bytes(b"")
    emit.write_json(art / emit.DATASET_INFO, {emit.DATASET_NAME: emit.file_entry(emit.DATA_FILE)})
    return art


def test_merge_keeps_other_entries_and_makes_the_path_absolute(artifact, tmp_path):
    target = tmp_path / "LLaMA-Factory" / "data" / "dataset_info.json"
    target.parent.mkdir(parents=True)
    theirs = {"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
              "identity": {"file_name": "identity.json", "formatting": "alpaca"}}
    target.write_text(json.dumps(theirs, indent=2))
    assert merge_dataset_info(artifact, target) == ("skillfactory_sft", "added")
    merged = json.loads(target.read_text())
    assert list(merged) == ["alpaca_en_demo", "identity", "skillfactory_sft"]
    assert {k: merged[k] for k in theirs} == theirs
    entry = merged["skillfactory_sft"]
    assert entry["file_name"] == str((artifact / "data" / "train.parquet").resolve())
    assert entry["columns"] == {"messages": "conversations"} and entry["formatting"] == "sharegpt"
    assert entry["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant", "system_tag": "system"}
    # idempotent; a clash is refused and leaves the file alone; --name sidesteps it
    assert merge_dataset_info(artifact / "dataset_info.json", target) == ("skillfactory_sft", "unchanged")
    clash = {**merged, "skillfactory_sft": {"file_name": "other.json"}}
    target.write_text(json.dumps(clash))
    with pytest.raises(SkillFactoryError, match="already has a different entry 'skillfactory_sft'.*--name"):
        merge_dataset_info(artifact, target)
    assert json.loads(target.read_text()) == clash
    assert merge_dataset_info(artifact, target, name="sf_traces") == ("sf_traces", "added")


def test_merge_command_line(artifact, tmp_path):
    target = tmp_path / "dataset_info.json"
    target.write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "skill_factory.llamafactory", "merge-dataset-info", str(artifact),
                           str(target)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "dataset 'skillfactory_sft' added to" in proc.stdout and "dataset: skillfactory_sft" in proc.stdout
    assert "skillfactory_sft" in json.loads(target.read_text())
    from skill_factory.llamafactory.__main__ import main

    target.write_text("[1, 2]")
    assert main(["merge-dataset-info", str(artifact), str(target)]) == 2


# --- launch command and environment ---------------------------------------------------------------

def launch_for(**kw):
    environ = kw.pop("environ", {})
    topo = resolve_topology(environ=environ, **kw)
    return topo, build_launch(YAML, topo, cli=CLI)


def test_cpu_and_single_gpu_run_a_plain_process():
    for kw in (dict(nnodes=1, gpus_per_node=0, use_cpu=True, deepspeed=False),
               dict(nnodes=1, gpus_per_node=1, use_cpu=False, deepspeed=False)):
        topo, launch = launch_for(**kw)
        assert launch.argv == [CLI, "train", YAML] and launch.env == {}
        assert not topo.distributed


def test_deepspeed_on_one_gpu_still_goes_through_torchrun():
    _, launch = launch_for(nnodes=1, gpus_per_node=1, use_cpu=False, deepspeed=True)
    assert launch.env == {"FORCE_TORCHRUN": "1", "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "1"}


def test_multi_gpu_exact():
    _, launch = launch_for(nnodes=1, gpus_per_node=8, use_cpu=False, deepspeed=True)
    assert launch.argv == [CLI, "train", YAML]
    assert launch.env == {"FORCE_TORCHRUN": "1", "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "8"}


def test_multi_node_from_config_exact():
    _, launch = launch_for(nnodes=2, gpus_per_node=8, use_cpu=False, deepspeed=True, node_rank=1,
                           master_addr="10.0.0.1", master_port=29600)
    assert launch.argv == [CLI, "train", YAML]
    assert launch.env == {"FORCE_TORCHRUN": "1", "NNODES": "2", "NODE_RANK": "1", "NPROC_PER_NODE": "8",
                          "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29600"}
    script = launch.shell()
    assert "export NODE_RANK=${NODE_RANK:-1}" in script and "export MASTER_ADDR=10.0.0.1" in script
    assert script.rstrip().endswith(f"exec {CLI} train {YAML}")


def test_multi_node_from_the_environment():
    _, launch = launch_for(nnodes=2, gpus_per_node=4, use_cpu=False, deepspeed=False,
                           environ={"NODE_RANK": "0", "MASTER_ADDR": "head", "MASTER_PORT": "1234"})
    assert launch.env["MASTER_ADDR"] == "head" and launch.env["MASTER_PORT"] == "1234"
    assert launch.env["NODE_RANK"] == "0"


def test_multi_node_in_a_slurm_allocation_fans_out_with_srun():
    environ = {"SLURM_JOB_ID": "77", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    topo, launch = launch_for(nnodes=2, gpus_per_node=8, use_cpu=False, deepspeed=True, environ=environ)
    assert topo == Topology(2, 8, True, 0, "gpu07", 29500, slurm=True)
    assert launch.argv == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                           "bash", "-c", f'NODE_RANK="$SLURM_NODEID" exec {CLI} train {YAML}']
    assert launch.env == {"FORCE_TORCHRUN": "1", "NNODES": "2", "NPROC_PER_NODE": "8",
                          "MASTER_ADDR": "gpu07", "MASTER_PORT": "29500"}


def test_multi_node_without_a_rendezvous_is_a_clear_error():
    with pytest.raises(SettingError, match="2-node training needs a rendezvous host") as err:
        resolve_topology(nnodes=2, gpus_per_node=8, use_cpu=False, deepspeed=True, environ={})
    assert err.value.key == "sft.master_addr" and "sbatch" in err.value.fix
    with pytest.raises(SettingError, match="runs on one node"):
        resolve_topology(nnodes=2, gpus_per_node=0, use_cpu=True, deepspeed=False, environ={})


@pytest.mark.parametrize("nodelist,hosts", [
    ("node1", ["node1"]),
    ("gpu[01-03,07],cpu5", ["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]),
    ("a[8-10]-ib", ["a8-ib", "a9-ib", "a10-ib"]),
    ("x[1,3],y[002-003]", ["x1", "x3", "y002", "y003"]),
])
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_output_is_streamed_with_a_prefix_and_kept(tmp_path, caplog):
    code = ("import sys, time\n"
            "print('first line')\n"
            "for i in range(3): sys.stdout.write(f'\\rbar {i}'); sys.stdout.flush()\n"
            "print()\nprint('last line', file=sys.stderr)\nsys.exit(3)\n")
    logger = logging.getLogger("test.stream")
    with caplog.at_level(logging.INFO, logger="test.stream"):
        rc = run_streamed(Launch([sys.executable, "-c", code], {"SF_X": "1"}), tmp_path / "x.log", logger,
                          redraw_seconds=3600)
    assert rc == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("[llamafactory] launching: SF_X=1 " + shlex.quote(sys.executable))
    assert "[llamafactory] first line" in lines and "[llamafactory] last line" in lines
    assert sum(m.startswith("[llamafactory] bar") for m in lines) == 2   # the first redraw, then the final line
    assert "bar 2" in (tmp_path / "x.log").read_text()
