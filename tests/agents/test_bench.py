"""`ospo-gym bench`: a smoke run with a tiny budget writes the three outputs; presets; the summary's definitions."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")  # the harness is part of ospo_gym.agents

from ospo_gym.agents import bench  # noqa: E402
from ospo_gym.agents.bench import report  # noqa: E402

SMOKE = ["--envs", "additive", "--seeds", "1", "--steps", "3", "--eval-every", "2", "--eval-samples", "2",
         "--env-arg", "num_prompts=4", "--jobs", "1", "--no-progress"]  # fmt: skip


def test_bench_smoke_writes_json_markdown_and_png(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from ospo_gym.cli import main

    out = tmp_path / "bench"
    assert main(["bench", *SMOKE, "--out", str(out)]) == 0
    assert "grpo" in capsys.readouterr().out
    results = json.loads((out / bench.RESULTS_JSON).read_text())
    assert results["command"].startswith("ospo-gym bench --envs additive --seeds 1 --steps 3")
    assert {r["variant"] for r in results["runs"]} == {"grpo", "ospo_prop", "ospo_rank"}
    for run in results["runs"]:
        assert [s for s, _ in run["eval_curve"]] == [0, 2, 3]  # step 0, every 2, the last
        assert run["steps"] == 3 and len(run["train_reward"]) == 3
        # identical budgets
        assert run["config"]["group_size"] == 8 and run["config"]["prompts_per_step"] == 4
    # identical initialisation: every agent's first evaluation is the same policy's
    assert len({r["initial_reward"] for r in results["runs"]}) == 1
    table = (out / bench.RESULTS_MD).read_text()
    for agent in ("`grpo`", "`ospo_prop`", "`ospo_rank`"):
        assert agent in table
    assert "steps to threshold" in table and "curves_additive.png" in table
    assert (out / "curves_additive.png").stat().st_size > 1000
    assert results["versions"]["torch"] and results["wall_seconds"] > 0


def test_presets_are_lists_of_variants():
    width = bench.make_plan("width")
    assert [v.overrides.get("w_max") for v in width.variants] == [None, 1, 2, 4, 8, 12]
    budget = bench.make_plan("budget")
    assert [v.overrides.get("max_coalitions") for v in budget.variants][1:] == [8, 16, 32, 64, 96]
    contiguity = bench.make_plan("contiguity")
    assert {v.overrides.get("contiguous") for v in contiguity.variants} == {None, True, False}
    group = bench.make_plan("group", algos=["grpo"])
    assert [v.overrides["group_size"] for v in group.variants] == [2, 4, 8]
    shift = bench.make_plan("retriever-shift")
    assert shift.tasks[0].eval_env_kwargs["retriever"] == "bm25-exhaustive"
    main = bench.make_plan(seeds=3, steps=50, tasks=["additive", "ospo/Interaction-v0"])
    assert [v.algo for v in main.variants] == ["grpo", "ospo_prop", "ospo_rank"]
    assert main.seeds == [0, 1, 2] and {t.steps for t in main.tasks} == {50}
    assert main.tasks[1].name == "interaction_v0"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(preset="nope"), "unknown preset"),
        (dict(tasks=["nope"]), "unknown task"),
        (dict(seeds=0), "seeds"),
        (dict(algos=["nope"]), "no variant"),
        (dict(tasks=["additive", "additive"]), "twice"),
    ],
)
def test_bad_plans_raise(kwargs, message):
    with pytest.raises(bench.PlanError, match=message):
        bench.make_plan(**kwargs)


def _run(variant, seed, curve, final=None):
    return {
        "task": "t", "env_id": "ospo/X-v0", "variant": variant, "algo": variant, "seed": seed,
        "eval_curve": curve, "final_reward": curve[-1][1] if final is None else final,
        "initial_reward": curve[0][1], "wall_seconds": 1.0, "train_seconds": 1.0, "perf": {},
    }  # fmt: skip


def test_summary_threshold_censoring_and_ratio():
    curves = {
        "grpo": [[[0, 0.1], [10, 0.5], [20, 0.6]], [[0, 0.1], [10, 0.3], [20, 0.5]]],  # never reaches 0.72
        "ospo_prop": [[[0, 0.1], [10, 0.9], [20, 0.8]], [[0, 0.1], [10, 0.5], [20, 0.8]]],
    }
    results = {
        "plan": {"variants": [{"label": "grpo"}, {"label": "ospo_prop"}],
                 "tasks": [{"name": "t", "env_id": "ospo/X-v0", "steps": 20, "eval_every": 10}]},
        "runs": [_run(v, s, c) for v, cs in curves.items() for s, c in enumerate(cs)],
    }  # fmt: skip
    task = report.summarise(results)["t"]
    assert task["best_variant"] == "ospo_prop" and task["threshold"] == pytest.approx(0.9 * 0.8)
    prop, grpo = task["variants"]["ospo_prop"], task["variants"]["grpo"]
    assert prop["steps_to_threshold"] == [10, 20] and prop["reached"] == 2 and not prop["steps_lower_bound"]
    assert (
        grpo["steps_to_threshold"] == [None, None] and grpo["steps_mean"] == 20 and grpo["steps_lower_bound"]
    )
    assert prop["steps_ratio_vs_baseline"] == {"value": pytest.approx(15 / 20), "bound": "upper"}
    rows = report.task_table("t", task)
    assert "not reached" in rows[2] and "0/2" in rows[2] and "≤ 0.75×" in rows[3]


def test_tiny_policy_language_of_each_synthetic_env():
    import gymnasium as gym

    from ospo_gym.agents.tiny_policy import env_texts, language_pieces

    pieces, separator = language_pieces(gym.make("ospo/Interaction-v0", num_prompts=2))
    assert separator == "," and all(len(p.split()) == 2 for p in pieces)
    env = gym.make("ospo/AdditiveKeywords-v0", vocab_size=12, num_prompts=2)
    pieces, separator = language_pieces(env)
    assert separator == "" and [p.strip() for p in pieces] == list(env.unwrapped.vocabulary)
    assert env.unwrapped.prompt(0) in env_texts(env)


@pytest.mark.slow
def test_bench_in_worker_processes(tmp_path):
    """The parallel path (spawned workers, progress over a queue) gives the same curves as the in-process one."""
    pytest.importorskip("torch")
    plan = bench.make_plan(tasks=["additive"], seeds=2, steps=2, eval_every=1, eval_samples=2,
                           env_kwargs={"num_prompts": 4})  # fmt: skip
    serial = bench.run_bench(plan, tmp_path / "serial", jobs=1, progress=False)
    parallel = bench.run_bench(plan, tmp_path / "parallel", jobs=2, progress=False)
    assert [r["eval_curve"] for r in serial["runs"]] == [r["eval_curve"] for r in parallel["runs"]]


def test_shifted_evaluation_env_gets_its_own_curve_and_column(tmp_path, capsys):
    """The retriever-shift machinery on a cheap env: evaluate also on the env built with other arguments."""
    pytest.importorskip("torch")
    from ospo_gym.cli import main

    args = ["bench", *SMOKE, "--algos", "grpo", "--eval-env-arg", "hint_noise=1.0", "--out", str(tmp_path)]
    assert main(args) == 0
    run = json.loads((tmp_path / bench.RESULTS_JSON).read_text())["runs"][0]
    assert [s for s, _ in run["shift_eval_curve"]] == [s for s, _ in run["eval_curve"]]
    assert "final reward, shifted env" in (tmp_path / bench.RESULTS_MD).read_text()


def test_bench_refuses_results_files_it_must_not_replace_before_any_run(tmp_path):
    """A link where results.json goes fails the benchmark at once (not after the runs), and is left as it was."""
    out = tmp_path / "bench"
    out.mkdir()
    target = tmp_path / "elsewhere.json"
    target.write_text("keep me")
    (out / bench.RESULTS_JSON).symlink_to(target)
    plan = bench.make_plan(tasks=["additive"], seeds=1, steps=1, eval_every=1, eval_samples=1, algos=["grpo"])
    with pytest.raises(ValueError, match="results.json is a symbolic link"):
        bench.run_bench(plan, out, jobs=1, progress=False)
    assert target.read_text() == "keep me" and [p.name for p in out.iterdir()] == [bench.RESULTS_JSON]


def test_bench_output_check_names_a_pipe_where_a_png_goes(tmp_path):
    import os

    os.mkfifo(tmp_path / report.curve_file("additive"))
    plan = bench.make_plan(tasks=["additive"], seeds=1, algos=["grpo"])
    with pytest.raises(ValueError, match="curves_additive.png is a named pipe"):
        bench.check_outputs(plan, tmp_path)
    bench.check_outputs(plan, tmp_path / "new")  # a folder still to be made is fine


@pytest.mark.parametrize("flag", ["--out", "--runs-dir"])
def test_bench_out_naming_a_file_exits_2_with_one_line(tmp_path, flag):
    import subprocess
    import sys

    pytest.importorskip("torch")
    file = tmp_path / "results"
    file.write_text("not a folder")
    command = [sys.executable, "-m", "ospo_gym.cli", "bench", *SMOKE, flag, str(file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"ospo-gym: error: {flag} {file} is a regular file, not a folder; give a new or existing folder"
    ]
    assert file.read_text() == "not a folder"


def test_long_range_preset_sweeps_the_coalition_structures():
    plan = bench.make_plan("long-range")
    assert plan.tasks[0].env_id == "ospo/LongRange-v0"
    assert [v.overrides.get("coalition_structure") for v in plan.variants] == [
        None, "windows", "random", "windows+complements", "owen"
    ]


def test_minilm_shift_presets_swap_bm25_and_the_pretrained_encoder():
    """Trained on BM25 and shifted to MiniLM, and trained on MiniLM and shifted to BM25: the shifted env of the
    second drops the dense arguments (BM25 would reject them) and builds; the task is the retrieval one."""
    import gymnasium as gym

    to_dense = bench.make_plan("retriever-shift-minilm").tasks[0]
    assert to_dense.name == "retrieval" and "retriever" not in to_dense.env_kwargs
    assert to_dense.eval_env_kwargs["retriever"] == "dense"
    assert to_dense.eval_env_kwargs["retriever_kwargs"]["model"] == "minilm"
    to_bm25 = bench.make_plan("retriever-shift-minilm-train").tasks[0]
    assert to_bm25.env_kwargs["retriever"] == "dense"
    assert to_bm25.env_kwargs["retriever_kwargs"]["model"] == "minilm"
    shifted = {**to_bm25.env_kwargs, **to_bm25.eval_env_kwargs}
    assert shifted["retriever"] == "bm25" and shifted["retriever_kwargs"] == {}
    env = gym.make(to_bm25.env_id, **shifted)
    reference = gym.make(to_dense.env_id, **to_dense.env_kwargs)  # the BM25 task the first preset trains on
    text = "red running shoes"
    assert env.unwrapped.score_texts([env.unwrapped.prompt_ids[0]], [text]) == pytest.approx(
        reference.unwrapped.score_texts([reference.unwrapped.prompt_ids[0]], [text])
    )
    env.close()
    reference.close()


def test_conv_search_preset_runs_the_multi_turn_estimators_and_bench_refuses_mixing_env_kinds(tmp_path, capsys):
    plan = bench.make_plan("conv-search")
    assert plan.tasks[0].env_id == "ospo/ConvSearch-v0" and plan.seeds == [0, 1, 2]
    assert [v.algo for v in plan.variants] == ["trajectory_grpo", "turn_grpo", "ospo_turn"]
    from ospo_gym.cli import main

    # a single-step estimator on the multi-turn task, and a multi-turn one on a single-step task: one line, exit 2
    for args in (["--preset", "main", "--envs", "conv-search"], ["--preset", "conv-search", "--envs", "additive"]):
        code = main(["bench", *args, "--out", str(tmp_path / "out"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and "multi-turn env" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any run
