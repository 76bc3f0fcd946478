"""The SageMaker launchers, against a local moto server: job definitions, the S3 layout, each job launched once.

moto marks every created training job Completed at once; a failed one is simulated through its backend.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import botocore.client
import pytest
from moto.sagemaker.models import sagemaker_backends
from support import (
    ACCOUNT,
    AWS_FLAGS,
    BUCKET,
    REGION,
    ROLE,
    assert_no_secret,
    channel_uris,
    dry_run,
    s3_text,
    training_jobs,
)

import launch_all_offline_search
import launch_all_supernet_training
import launch_offline_search
import launch_supernet_training
from nas_llm.cloud import sagemaker_jobs
from nas_llm.common import flags
from nas_llm.common.arguments import SupernetArguments
from nas_llm.common.errors import exit_on_usage_error

pytestmark = pytest.mark.usefixtures("only_local_network")  # nothing reaches the internet

PROJECT_DIR = Path(__file__).resolve().parents[1]
SUPERNET = [
    "--task_name", "mrpc", "--seed", "3", "--sampling_strategy", "sandwich", "--search_space", "medium",
    "--num_train_epochs", "2",
]
SUPERNET_FOLDER = "bert-base-cased/mrpc/sandwich/medium/epochs_2/seed_3"










@pytest.fixture
def small_source_dir(tmp_path) -> list[str]:
    """--source_dir of a stand-in project, so that launching many jobs uploads a few bytes each."""
    source_dir = tmp_path / "project"
    source_dir.mkdir()
    for name in ("train_supernet.py", "run_offline_search.py", "requirements-core.txt"):
        (source_dir / name).write_text("")
    return ["--source_dir", str(source_dir)]






def base_names(jobs: dict[str, dict]) -> list[str]:
    """The job names without the timestamp the SDK appends."""
    return sorted(re.fullmatch(r"(.+)-\d{14}", name).group(1) for name in jobs)






def finish_supernet(aws, folder: str) -> None:
    """What a finished training job leaves in its checkpoint folder last."""
    aws.s3.put_object(Bucket=BUCKET, Key=f"nas_llm/supernet/{folder}/results.json", Body=b"{}")




def test_launcher_choices_are_the_entry_scripts_choices():
    """The launchers offer the torch-free vocabulary (flags.py); each name in it has an implementation."""
    from nas_llm.data.data import TASKS
    from nas_llm.model.search_spaces import SEARCH_SPACES
    from nas_llm.training.sampling import SAMPLING_STRATEGIES

    assert flags.TASKS == tuple(TASKS)
    distilling = tuple(name for name, strategy in SAMPLING_STRATEGIES.items() if strategy.distill)
    assert flags.DISTILLING_STRATEGIES == distilling
    assert flags.SAMPLING_STRATEGIES == tuple(SAMPLING_STRATEGIES)
    assert flags.SEARCH_SPACES == tuple(SEARCH_SPACES)


def test_dry_run_prints_the_job_definitions_without_any_aws_call(fake_credentials, monkeypatch, capsys):
    def no_aws_call(client, operation, params):
        raise AssertionError(f"--dry_run called AWS: {operation}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", no_aws_call)
    (training,) = dry_run(launch_supernet_training.main, SUPERNET, capsys)
    assert training["entry_script"] == "train_supernet.py"
    assert training["hyperparameters"] == {
        "model_name_or_path": "bert-base-cased", "task_name": "mrpc", "sampling_strategy": "sandwich",
        "search_space": "medium", "seed": 3, "num_train_epochs": 2, "learning_rate": 2e-05,
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "group_by_length": False, "fp16": True,
        "save_strategy": "epoch",
        "reorder_units": "none", "num_importance_batches": 32, "sampling_distribution": "uniform",
        "output_dir": "/opt/ml/checkpoints",
        "log_dir": "/opt/ml/output/tensorboard",
        "resume_from_checkpoint": "latest",
    }
    bucket = f"sagemaker-{REGION}-<account-id>"  # no --bucket: a placeholder instead of asking AWS
    assert training["checkpoint_s3_uri"] == f"s3://{bucket}/nas_llm/supernet/{SUPERNET_FOLDER}/"
    assert training["sagemaker"]["role"] is None
    assert training["sagemaker"]["training_image"].endswith("/pytorch-training:2.8-gpu-py312")
    assert training["sagemaker"]["instance_type"] == "ml.g4dn.xlarge"
    assert training["sagemaker"]["max_run_s"] == 72 * 3600

    (search,) = dry_run(launch_offline_search.main, SUPERNET, capsys)
    assert search["input_channels"] == {"model": training["checkpoint_s3_uri"]}
    assert search["hyperparameters"]["checkpoint_dir_model"] == "/opt/ml/input/data/model"
    assert search["hyperparameters"]["search_strategy"] == "local_search"
    assert search["sagemaker"]["volume_size_gb"] == 125

    for grid in (launch_all_supernet_training, launch_all_offline_search):
        launch_all = dry_run(grid.main, ["--task_names", "rte,mrpc"], capsys)
        assert [job["hyperparameters"]["task_name"] for job in launch_all] == ["rte", "mrpc"]
    for launch in (launch_supernet_training, launch_all_supernet_training):
        (budget_aware,) = dry_run(launch.main, ["--sampling_distribution", "params"], capsys)
        assert budget_aware["hyperparameters"]["sampling_distribution"] == "params"
    assert_no_secret(json.dumps([training, search]))


def test_label_and_teacher_flags_pass_through_to_the_training_job(capsys):
    teacher_folder = f"s3://{BUCKET}/nas_llm/supernet/bert-base-cased/mrpc/standard/medium/epochs_2/seed_3"
    argv = [
        "--task_name", "stsb", "--sampling_strategy", "kd", "--teacher_model_name_or_path", teacher_folder,
        "--init_from_teacher", "True", "--distill_hidden_states", "True", "--distill_full_network", "True",
        "--standardize_labels", "False",
    ]
    (training,) = dry_run(launch_supernet_training.main, argv, capsys)
    assert training["input_channels"] == {"teacher": teacher_folder + "/"}
    hyperparameters = training["hyperparameters"]
    assert hyperparameters["teacher_model_name_or_path"] == "/opt/ml/input/data/teacher"
    assert {flag: hyperparameters[flag] for flag in (
        "init_from_teacher", "distill_hidden_states", "distill_full_network", "standardize_labels",
    )} == {"init_from_teacher": True, "distill_hidden_states": True, "distill_full_network": True,
           "standardize_labels": False}
    (hub_teacher,) = dry_run(launch_supernet_training.main, ["--teacher_model_name_or_path", "org/bert-mrpc"], capsys)
    assert hub_teacher["hyperparameters"]["teacher_model_name_or_path"] == "org/bert-mrpc"
    assert hub_teacher["input_channels"] == {}
    train_supernet_flags = {field.name for field in dataclasses.fields(SupernetArguments)}
    assert set(hyperparameters) - {"model_name_or_path", "task_name", "search_space", "seed", "num_train_epochs",
                                   "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
                                   "group_by_length", "fp16", "save_strategy", "output_dir", "log_dir",
                                   "resume_from_checkpoint"} <= train_supernet_flags


def test_job_names_are_valid_unique_and_deterministic(capsys):
    every_value = [
        "--task_names", ",".join(flags.TASKS), "--seeds", "0,1",
        "--sampling_strategies", ",".join(flags.SAMPLING_STRATEGIES),
        "--search_spaces", ",".join(flags.SEARCH_SPACES),
        "--model_name_or_path", "meta-llama/Llama-3.2-1B-Instruct", "--s3_prefix", "a/long/experiment/prefix",
    ]
    trainings = dry_run(launch_all_supernet_training.main, every_value, capsys)
    searches = dry_run(
        launch_all_offline_search.main,
        [*every_value, "--search_strategies", ",".join(flags.SEARCH_STRATEGIES)], capsys,
    )
    strategies, spaces = flags.SAMPLING_STRATEGIES, flags.SEARCH_SPACES
    grid_size = len(flags.TASKS) * 2 * len(strategies) * len(spaces)
    assert len(trainings) == grid_size and len(searches) == len(trainings) * 5
    names = [job["base_job_name"] for job in trainings + searches]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= 48 and sagemaker_jobs.VALID_JOB_NAME.match(name), name
        assert sagemaker_jobs.VALID_JOB_NAME.match(f"{name}-20260101123000")  # what the SDK makes of it
    assert names[0] == "supernet-cola-s0-standard-small-" + names[0][-8:]
    again = dry_run(launch_all_supernet_training.main, every_value, capsys)
    assert [job["base_job_name"] for job in again] == names[: len(trainings)]
    # every search reads a super-network the training grid writes
    assert {job["input_channels"]["model"] for job in searches} == {job["checkpoint_s3_uri"] for job in trainings}


def test_supernet_training_job(aws, capsys):
    argv = [*SUPERNET, *AWS_FLAGS, "--use_spot", "--max_run", "7200"]
    (expected,) = dry_run(launch_supernet_training.main, argv, capsys)
    launch_supernet_training.main(argv)
    output = capsys.readouterr()

    ((name, job),) = training_jobs(aws).items()
    assert name.startswith(expected["base_job_name"] + "-") and sagemaker_jobs.VALID_JOB_NAME.match(name)
    assert f"launched {name}" in output.out
    assert job["RoleArn"] == ROLE
    assert job["AlgorithmSpecification"]["TrainingImage"] == (
        f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-training:2.8-gpu-py312"
    )
    assert job["HyperParameters"] == {
        "model_name_or_path": "bert-base-cased", "task_name": "mrpc", "sampling_strategy": "sandwich",
        "search_space": "medium", "seed": "3", "num_train_epochs": "2", "learning_rate": "2e-05",
        "per_device_train_batch_size": "4", "per_device_eval_batch_size": "8", "group_by_length": "false",
        "fp16": "true",
        "save_strategy": "epoch", "reorder_units": "none", "num_importance_batches": "32",
        "sampling_distribution": "uniform",
        "output_dir": "/opt/ml/checkpoints", "log_dir": "/opt/ml/output/tensorboard",
        "resume_from_checkpoint": "latest",
    }
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/nas_llm/supernet/{SUPERNET_FOLDER}/", "LocalPath": "/opt/ml/checkpoints"
    }
    assert job["TensorBoardOutputConfig"] == {
        "S3OutputPath": f"s3://{BUCKET}/nas_llm/tensorboard/supernet/{SUPERNET_FOLDER}/",
        "LocalPath": "/opt/ml/output/tensorboard",
    }
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/nas_llm/jobs/"
    assert job["ResourceConfig"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 7200 + 24 * 3600}

    # the SDK's channels: the code (only the project's modules and requirements) and its drivers
    channels = channel_uris(job)
    assert set(channels) == {"code", "sm_drivers"}
    assert channels["code"].startswith(f"s3://{BUCKET}/nas_llm/jobs/")
    source_code = json.loads(s3_text(aws, channels["sm_drivers"] + "/sourcecode.json"))
    assert source_code["entry_script"] == "train_supernet.py" and source_code["requirements"] == "requirements.txt"
    code_key = channels["code"].removeprefix(f"s3://{BUCKET}/")
    uploaded = [item["Key"] for item in aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=code_key)["Contents"]]
    uploaded_files = {key.rsplit("/", 1)[1] for key in uploaded}
    assert {"train_supernet.py", "run_offline_search.py", "requirements.txt"} <= uploaded_files
    assert all(name.endswith(".py") or name == "requirements.txt" for name in uploaded_files)
    # the container installs what the entry scripts need, not the launchers' and tests' packages
    requirements = s3_text(aws, channels["code"] + "/requirements.txt").splitlines()
    assert any(line.startswith("transformers") for line in requirements)
    assert not any(line.startswith(("sagemaker", "moto", "pytest", "deepspeed", "-r")) for line in requirements)

    every_object = aws.s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert_no_secret(
        output.out, output.err, json.dumps(job, default=str),
        *(s3_text(aws, f"s3://{BUCKET}/{item['Key']}") for item in every_object if item["Key"].endswith(".json")),
    )


def test_search_job_reads_the_checkpoint_of_its_training_job(aws, capsys):
    launch_supernet_training.main([*SUPERNET, *AWS_FLAGS])
    (training,) = training_jobs(aws).values()
    finish_supernet(aws, SUPERNET_FOLDER)
    launch_offline_search.main([*SUPERNET, *AWS_FLAGS, "--search_strategy", "morea", "--num_samples", "50"])
    assert "1 launched" in capsys.readouterr().out

    (search,) = [job for job in training_jobs(aws).values() if job["TrainingJobName"].startswith("search-")]
    assert channel_uris(search)["model"] == training["CheckpointConfig"]["S3Uri"]
    assert search["HyperParameters"] == {
        "model_name_or_path": "bert-base-cased", "task_name": "mrpc", "search_space": "medium",
        "search_strategy": "morea", "num_samples": "50", "seed": "3",
        "checkpoint_dir_model": "/opt/ml/input/data/model", "output_dir": "/opt/ml/checkpoints",
        "log_dir": "/opt/ml/output/tensorboard",
    }
    assert search["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/nas_llm/search/{SUPERNET_FOLDER}/morea/"
    assert search["TensorBoardOutputConfig"]["S3OutputPath"] == (
        f"s3://{BUCKET}/nas_llm/tensorboard/search/{SUPERNET_FOLDER}/morea/"
    )
    assert search["ResourceConfig"]["VolumeSizeInGB"] == 125
    sourcecode = json.loads(s3_text(aws, channel_uris(search)["sm_drivers"] + "/sourcecode.json"))
    assert sourcecode["entry_script"] == "run_offline_search.py"


def test_search_waits_for_an_unfinished_super_network(aws, small_source_dir, capsys):
    launch_offline_search.main([*SUPERNET, *AWS_FLAGS, *small_source_dir])
    assert "0 launched, 0 already there, 1 waiting" in capsys.readouterr().out
    assert training_jobs(aws) == {}


def test_training_grid_launches_each_job_once(aws, small_source_dir, capsys):
    grid = [
        "--task_names", "rte,mrpc", "--seeds", "0,1", "--sampling_strategies", "one_shot,sandwich",
        *AWS_FLAGS, *small_source_dir,
    ]
    expected = sorted(job["base_job_name"] for job in dry_run(launch_all_supernet_training.main, grid, capsys))
    assert len(expected) == 8

    launch_all_supernet_training.main(grid)
    assert "8 launched, 0 already there" in capsys.readouterr().out
    assert base_names(training_jobs(aws)) == expected

    launch_all_supernet_training.main(grid)
    assert "0 launched, 8 already there" in capsys.readouterr().out
    assert base_names(training_jobs(aws)) == expected


def test_search_grid_from_a_config_file_launches_what_is_missing(aws, small_source_dir, capsys, tmp_path):
    config = tmp_path / "grid.json"
    config.write_text(json.dumps({
        "task_names": ["rte", "mrpc"], "seeds": [0], "sampling_strategies": ["one_shot"], "search_spaces": "small",
        "search_strategies": ["random_search", "nsga2"], "num_samples": 100, "bucket": BUCKET, "role": ROLE,
    }))
    argv = ["--config", str(config), "--region", REGION, *small_source_dir]
    expected = {"rte": [], "mrpc": []}
    for job in dry_run(launch_all_offline_search.main, argv, capsys):
        assert job["hyperparameters"]["num_samples"] == 100
        expected[job["hyperparameters"]["task_name"]].append(job["base_job_name"])

    finish_supernet(aws, "bert-base-cased/rte/one_shot/small/epochs_20/seed_0")
    launch_all_offline_search.main(argv)
    assert "2 launched, 0 already there, 2 waiting" in capsys.readouterr().out
    assert base_names(training_jobs(aws)) == sorted(expected["rte"])

    launch_all_offline_search.main(argv)
    assert "0 launched, 2 already there, 2 waiting" in capsys.readouterr().out

    finish_supernet(aws, "bert-base-cased/mrpc/one_shot/small/epochs_20/seed_0")
    launch_all_offline_search.main([*argv, "--search_strategies", "nsga2,random_search"])  # flags beat the file
    assert "2 launched, 2 already there, 0 waiting" in capsys.readouterr().out
    assert base_names(training_jobs(aws)) == sorted(expected["rte"] + expected["mrpc"])


def test_a_failed_job_is_launched_again_only_with_relaunch_failed(aws, small_source_dir, capsys):
    argv = [*SUPERNET, *AWS_FLAGS, *small_source_dir]
    launch_supernet_training.main(argv)
    (first,) = training_jobs(aws)
    sagemaker_backends[ACCOUNT][REGION].training_jobs[first].training_job_status = "Failed"

    launch_supernet_training.main(argv)
    assert f"{first} is Failed" in capsys.readouterr().out
    time.sleep(1.1)  # the SDK's timestamp has seconds: the new job gets another name
    launch_supernet_training.main([*argv, "--relaunch_failed"])
    assert "1 launched" in capsys.readouterr().out
    launch_supernet_training.main([*argv, "--relaunch_failed"])
    assert "is Completed" in capsys.readouterr().out
    assert len(training_jobs(aws)) == 2


@pytest.mark.parametrize(
    ("existing", "relaunch_failed", "duplicate"),
    [
        ({}, False, None),
        ({"a-1": "InProgress"}, True, "a-1"),
        ({"a-1": "Stopping"}, True, "a-1"),
        ({"a-1": "Stopped"}, False, "a-1"),
        ({"a-1": "Failed", "a-2": "Stopped"}, True, None),
        ({"a-1": "Failed", "a-2": "Completed"}, True, "a-2"),
    ],
)
def test_which_existing_job_a_new_one_would_duplicate(existing, relaunch_failed, duplicate):
    assert sagemaker_jobs.duplicate_of(existing, relaunch_failed) == duplicate


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (launch_supernet_training.main, ["--task_name", "yelp", "--dry_run"], "unknown value 'yelp'"),
        (launch_supernet_training.main, ["--sampling_strategy", "oneshot", "--dry_run"], "unknown value 'oneshot'"),
        (launch_offline_search.main, ["--search_strategy", "bayesopt", "--dry_run"], "unknown value 'bayesopt'"),
        (launch_offline_search.main, ["--search_space", "tiny", "--dry_run"], "unknown value 'tiny'"),
        (launch_all_supernet_training.main, ["--sampling_strategies", "kd,distill", "--dry_run"], "'distill'"),
        (launch_all_offline_search.main, ["--search_strategies", "ehvi,grid", "--dry_run"], "'grid'"),
        (launch_all_offline_search.main, ["--seeds", "0,one", "--dry_run"], "'one' is not an integer"),
        (launch_supernet_training.main, ["--fp16", "maybe", "--dry_run"], "not a boolean"),
        (launch_supernet_training.main, [], "no IAM role"),
        (launch_supernet_training.main, ["--use_spot", "--max_wait", "60", "--dry_run"], "--max_wait"),
        (launch_offline_search.main, ["--max_wait", "60000", "--dry_run"], "--use_spot"),
        (launch_all_supernet_training.main, ["--config", "missing.json", "--dry_run"], "cannot read --config"),
        (launch_supernet_training.main, ["--teacher_model_name_or_path", "s3://b/t", "--sampling_strategy",
                                         "sandwich", "--dry_run"], "need a sampling strategy that distils"),
        (launch_all_supernet_training.main, ["--sampling_strategies", "one_shot,standard", "--distill_hidden_states",
                                             "True", "--dry_run"], "not standard"),
        (launch_supernet_training.main, ["--init_from_teacher", "True", "--dry_run"], "need --teacher_model_name"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(fake_credentials, main, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        exit_on_usage_error(lambda: main(argv))
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr


def test_unknown_config_keys_are_refused(fake_credentials, tmp_path, capsys):
    config = tmp_path / "grid.json"
    config.write_text(json.dumps({"task_names": ["rte"], "searches": ["morea"]}))
    with pytest.raises(SystemExit):
        exit_on_usage_error(lambda: launch_all_offline_search.main(["--config", str(config), "--dry_run"]))
    assert "unknown keys in" in capsys.readouterr().err


def test_the_script_itself_prints_one_error_line(fake_credentials):
    result = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "launch_all_offline_search.py"), "--search_strategies", "foo", "--dry_run"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: argument --search_strategies: unknown value 'foo'; choose from: "
        "random_search, local_search, morea, nsga2, ehvi"
    ]
