"""Training specs: bad input is rejected before anything runs, with the key and a hint."""

from __future__ import annotations

import copy
import subprocess

import pytest
from conftest import PYTHON, REPO, run_hpc, run_snakemake, write_spec

from hpc.core import specfile
from hpc.core.errors import SpecError
from hpc.train.spec import load_train_spec, parse_train_spec

SWEEP = {
    "name": "mc-data",
    "model": "mccall",
    "params": {"n_wages": 11},
    "sweep": {"c": {"linspace": [10, 30, 5]}, "beta": [0.9, 0.95]},
}
TRAIN = {
    "name": "mc-surr",
    "data": {"sweep": "sweep.yaml", "inputs": ["c", "beta", "wage"], "target": "value"},
    "network": {"width": 8, "depth": 2},
    "optimizer": {"learning_rate": 1.0e-3},
    "batch_size": 16,
    "steps": 10,
}


@pytest.fixture
def spec_dir(tmp_path):
    write_spec(tmp_path, SWEEP, "sweep.yaml")
    return tmp_path


def with_changes(**changes) -> dict:
    spec = copy.deepcopy(TRAIN)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value
    return spec


def check(spec_dir, spec: dict):
    return load_train_spec(write_spec(spec_dir, spec, "train.yaml"))


def test_good_spec_gets_its_defaults(spec_dir):
    spec = check(spec_dir, TRAIN)
    assert spec.network == {"kind": "mlp", "widths": [8, 8], "activation": "tanh", "dtype": "float32"}
    assert spec.optimizer["name"] == "adam" and spec.optimizer["schedule"]["kind"] == "constant"
    assert spec.eval_every == 1 and spec.checkpoint_every == 2 and spec.data.holdout == 0.2
    assert spec.sweep_file == str(spec_dir / "sweep.yaml")
    assert spec.resources["signal_s"] == 120


def test_the_digest_ignores_where_it_runs(spec_dir):
    a = check(spec_dir, TRAIN)
    b = check(spec_dir, dict(TRAIN, resources={"nodes": 2, "tasks": 4}, checkpoint_every=3))
    c = check(spec_dir, dict(TRAIN, seed=1))
    assert a.digest() == b.digest() != c.digest()


@pytest.mark.parametrize("changes, key, words", [
    ({"network__widht": 3}, "network.widht", "unknown key"),
    ({"optimizer__learning_rate": "1e-3"}, "optimizer.learning_rate", "write 1.0e-3"),
    ({"optimizer__name": "adagrad"}, "optimizer.name", "allowed: adam"),
    ({"data__sweep": "nowhere.yaml"}, "data.sweep", "not found"),
    ({"data__target": "iterations"}, "data.target", "reservation_wage"),
    ({"data__inputs": ["c", "beta", "tol"]}, "data.inputs[2]", "not swept"),
    ({"data__inputs": ["c", "beta", "kappa"]}, "data.inputs[2]", "neither a swept parameter"),
    ({"data__inputs": ["c", "wage"]}, "data.inputs", "varies beta"),
    ({"data__holdout": 0.99}, "data.holdout", "at least one point"),
    ({"data__synthetic": {"samples": 10}}, "data.sweep", "no sweep"),
    ({"data": {"inputs": ["c"]}}, "data.sweep", "missing"),
    ({"name": "mc-data"}, "name", "own name"),
    ({"name": "../x"}, "name", "plain file name"),
    ({"batch_size": 10, "resources": {"tasks": 4}}, "batch_size", "multiple of 4"),
    ({"batch_size": 16, "resources": {"tasks": 2, "nodes": 3}}, "resources.tasks", "one task"),
    ({"network__widths": [4, 4]}, "network.width", "not both"),
    ({"optimizer__momentum": 0.9}, "optimizer.momentum", "sgd"),
    ({"optimizer__weight_decay": 0.1}, "optimizer.weight_decay", "adamw"),
    ({"optimizer__schedule": {"kind": "cosine", "warmup_steps": 10}}, "optimizer.schedule.warmup_steps", "fewer"),
    ({"eval_every": 11}, "eval_every", "at most 10"),
    ({"steps": None}, "(top level)", "'steps' is a required property"),
])
def test_bad_specs_are_rejected_with_key_and_hint(spec_dir, changes, key, words):
    with pytest.raises(SpecError) as err:
        check(spec_dir, with_changes(**changes))
    assert err.value.key == key, err.value
    assert words in str(err.value)


def test_a_bad_sweep_spec_is_reported_under_data_sweep(spec_dir):
    write_spec(spec_dir, dict(SWEEP, sweep={"c": [1, 1]}), "sweep.yaml")
    with pytest.raises(SpecError) as err:
        check(spec_dir, TRAIN)
    assert err.value.key == "data.sweep" and "more than once" in str(err.value)


def test_synthetic_data_needs_no_sweep():
    spec = parse_train_spec(dict(TRAIN, data={"synthetic": {"samples": 100, "features": 3}, "holdout": 0.1}))
    assert spec.data.kind == "synthetic" and spec.sweep_file is None
    assert spec.data.synthetic == {"samples": 100, "features": 3, "outputs": 1, "noise": 0.0, "seed": 0}


def test_example_specs_are_valid():
    for path in sorted((REPO / "workflow" / "train").glob("*.yaml")):
        run_hpc("train", "validate", path, cwd=REPO)


def test_cli_prints_one_line_and_exits_2(spec_dir):
    path = write_spec(spec_dir, with_changes(data__target="nope"), "train.yaml")
    result = run_hpc("train", "validate", path, cwd=spec_dir, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "data.target" in result.stderr


def test_snakefile_rejects_a_bad_training_spec_before_anything_runs(spec_dir):
    path = write_spec(spec_dir, with_changes(network__activation="sigmoid"), "train.yaml")
    result = run_snakemake(spec_dir, "-n", "--config", f"train={path}", check=False)
    assert result.returncode == 2
    assert "bad training spec" in result.stderr and "network.activation" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (spec_dir / "results").exists()


def test_dry_run_shows_one_dag_from_sweep_to_report_with_multinode_resources(spec_dir):
    path = write_spec(spec_dir, dict(TRAIN, resources={"nodes": 2, "tasks": 4, "runtime": 5, "signal_s": 60}),
                      "train.yaml")
    result = subprocess.run([PYTHON, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--profile",
                             str(REPO / "profiles" / "slurm"), "--config", f"train={path}"], cwd=spec_dir,
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    for rule in ("plan", "run_shard", "aggregate", "train", "train_report"):
        assert f"rule {rule}:" in out, rule
    train = out[out.index("rule train:"):]
    assert "results/mc-data/aggregate.json" in train.splitlines()[1]  # the sweep is the training input
    assert "nodes=2" in train and "tasks_per_node=2" in train and "mpi=srun" in train
    assert "slurm_extra=--signal=TERM@60" in train and "runtime=5" in train


def test_defaults_come_from_the_schema(spec_dir):
    spec = check(spec_dir, TRAIN)
    schema = specfile.schema("train")["properties"]
    assert spec.keep_checkpoints == schema["keep_checkpoints"]["default"] == 2
    assert spec.seed == 0 and spec.shard_params is False and spec.cpu_devices == 0
    assert spec.optimizer["schedule"] == specfile.defaults("train", "optimizer.schedule")
    assert spec.optimizer["weight_decay"] == 0.0 and spec.optimizer["momentum"] is None
    assert spec.resources == {"signal_s": schema["resources"]["properties"]["signal_s"]["default"]}
    assert spec.raw == TRAIN  # the spec as written is kept apart from its defaults


def test_the_digest_of_an_example_is_unchanged():
    # Checkpoints of another digest are never resumed: pin the digest of an example run.
    assert load_train_spec(REPO / "workflow" / "train" / "mccall-surrogate.yaml").digest() == "088611028a06fe8b"


def test_sweep_files_are_looked_up_in_a_checkout_only(tmp_path, monkeypatch):
    from hpc.train import spec as train_spec

    monkeypatch.chdir(tmp_path)
    relative = "workflow/train/sweeps/mccall-train.yaml"
    assert train_spec.resolve_sweep_file(relative, None) == REPO / relative  # this checkout's examples
    installed = tmp_path / "site-packages"  # an installed package has no workflow beside it
    (installed / "workflow" / "train" / "sweeps").mkdir(parents=True)
    (installed / relative).write_text("name: not-looked-at\n")
    monkeypatch.setattr(train_spec.checkout, "package_root", lambda: installed)
    with pytest.raises(SpecError) as err:
        train_spec.resolve_sweep_file(relative, None)
    assert err.value.key == "data.sweep" and "site-packages" not in str(err.value)
