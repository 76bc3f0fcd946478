"""launch_standard_nas.py: the standard-NAS run as one SageMaker job, against the launchers' local moto server."""

from __future__ import annotations

import json

import botocore.client
import pytest
from support import AWS_FLAGS, BUCKET, assert_no_secret, channel_uris, dry_run, s3_text, training_jobs

import launch_standard_nas
from nas_llm.cloud import sagemaker_jobs
from nas_llm.common.errors import exit_on_usage_error

pytestmark = pytest.mark.usefixtures("only_local_network")  # nothing reaches the internet

RUN = ["--task_name", "mrpc", "--seed", "2", "--search_space", "medium", "--max_epochs", "2", "--num_samples", "30"]
RUN_FOLDER = "bert-base-cased/mrpc/moasha/medium/epochs_2/seed_2"
HYPERPARAMETERS = {
    "model_name_or_path": "bert-base-cased", "task_name": "mrpc", "search_space": "medium", "scheduler": "moasha",
    "max_epochs": 2, "n_workers": 4, "num_samples": 30, "learning_rate": 2e-05, "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 8, "fp16": True, "seed": 2, "output_dir": "/opt/ml/checkpoints",
    "overwrite_output_dir": True,
}


def test_launcher_schedulers_are_the_entry_scripts_schedulers():
    from nas_llm.baselines.standard_nas import SCHEDULERS

    assert launch_standard_nas.SCHEDULERS == SCHEDULERS


def test_dry_run_prints_the_job_without_any_aws_call(fake_credentials, monkeypatch, capsys):  # noqa: F811
    def no_aws_call(client, operation, params):
        raise AssertionError(f"--dry_run called AWS: {operation}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", no_aws_call)
    (job,) = dry_run(launch_standard_nas.main, RUN, capsys)
    assert job["entry_script"] == "run_standard_nas.py" and job["hyperparameters"] == HYPERPARAMETERS
    bucket = "sagemaker-us-east-1-<account-id>"
    assert job["checkpoint_s3_uri"] == f"s3://{bucket}/nas_llm/standard_nas/{RUN_FOLDER}/"
    assert job["sagemaker"]["instance_type"] == "ml.g4dn.12xlarge" and job["sagemaker"]["volume_size_gb"] == 125
    assert len(job["base_job_name"]) <= 48 and sagemaker_jobs.VALID_JOB_NAME.match(job["base_job_name"])


def test_the_job_is_launched_once_with_the_run_synced_to_its_s3_folder(aws, capsys):  # noqa: F811
    argv = [*RUN, *AWS_FLAGS, "--max_wallclock_time", "3600"]
    (expected,) = dry_run(launch_standard_nas.main, argv, capsys)
    launch_standard_nas.main(argv)
    assert "1 launched" in capsys.readouterr().out
    launch_standard_nas.main(argv)
    assert "0 launched, 1 already there" in capsys.readouterr().out

    ((name, job),) = training_jobs(aws).items()
    assert name.startswith(expected["base_job_name"] + "-")
    assert job["HyperParameters"] == {
        key: str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in (HYPERPARAMETERS | {"max_wallclock_time": 3600}).items()
    }
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/nas_llm/standard_nas/{RUN_FOLDER}/", "LocalPath": "/opt/ml/checkpoints"
    }
    assert job["ResourceConfig"]["InstanceType"] == "ml.g4dn.12xlarge"
    sourcecode = json.loads(s3_text(aws, channel_uris(job)["sm_drivers"] + "/sourcecode.json"))
    assert sourcecode["entry_script"] == "run_standard_nas.py"
    code_key = channel_uris(job)["code"].removeprefix(f"s3://{BUCKET}/")
    objects = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=code_key)["Contents"]
    uploaded = {item["Key"].rsplit("/", 1)[1] for item in objects}
    assert {"run_standard_nas.py", "standard_nas_trial.py", "standard_nas.py"} <= uploaded  # the trials run there too
    assert_no_secret(json.dumps(job, default=str))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num_samples", "3", "--scheduler", "hyperband", "--dry_run"], "invalid choice: 'hyperband'"),
        (["--dry_run"], "give the run a budget"),
        (["--num_samples", "3"], "no IAM role"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(fake_credentials, argv, message, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as exit_info:
        exit_on_usage_error(lambda: launch_standard_nas.main(argv))
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr
