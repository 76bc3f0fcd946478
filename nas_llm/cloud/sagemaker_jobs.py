"""What the SageMaker launchers share: their flags, the S3 layout, job names, and launching a job once.

A job is first a `JobDefinition` (plain data: `--dry_run` prints it as JSON without any AWS call), then a
`ModelTrainer` of sagemaker 3.x that runs one of the entry scripts in a PyTorch training container.

S3 layout, derived only from the settings that define a job, so that a search finds its super-network
(``<model>`` with ``/`` written as ``--``):

    s3://<bucket>/<s3_prefix>/supernet/<model>/<task>/<sampling_strategy>/<search_space>/epochs_<E>/seed_<S>/
        the super-network checkpoint (train_supernet.py --output_dir, synced by SageMaker checkpointing)
    s3://<bucket>/<s3_prefix>/search/<same as above>/<search_strategy>/
        results_<task>.json and the search log (run_offline_search.py --output_dir, synced the same way)
    s3://<bucket>/<s3_prefix>/standard_nas/<model>/<task>/<scheduler>/<search_space>/epochs_<E>/seed_<S>/
        a standard-NAS run (launch_standard_nas.py: run_standard_nas.py --output_dir, synced the same way)
    s3://<bucket>/<s3_prefix>/tensorboard/{supernet,search}/<same as the job's folder>/
    s3://<bucket>/<s3_prefix>/jobs/
        what SageMaker itself writes and reads per job: uploaded code, output.tar.gz, model.tar.gz

Job names: ``<stage>-<task>-s<seed>-<strategies...>``, shortened to fit, then ``-`` and 8 hex digits of the
SHA-256 of the job's S3 folder (prefix included): at most 48 characters, because the SDK's ModelTrainer
always appends ``-YYYYmmddHHMMSS`` and SageMaker allows 63. A job exists when a training job named
``<base name>-...`` does.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import boto3
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError
from sagemaker.core import image_uris
from sagemaker.core.helper.session_helper import Session
from sagemaker.core.training.configs import (
    CheckpointConfig,
    Compute,
    InputData,
    OutputDataConfig,
    SourceCode,
    StoppingCondition,
    TensorBoardOutputConfig,
)
from sagemaker.train.model_trainer import ModelTrainer

from nas_llm.common.errors import UsageArgumentParser, UsageError
from nas_llm.common.flags import SAMPLING_STRATEGIES, SEARCH_SPACES, SEARCH_STRATEGIES, TASKS

# Paths inside the training container.
CHECKPOINT_DIR = "/opt/ml/checkpoints"  # SageMaker syncs it with the job's checkpoint S3 folder
TENSORBOARD_DIR = "/opt/ml/output/tensorboard"  # SageMaker uploads it to the TensorBoard S3 folder
MODEL_CHANNEL = "model"  # the search's input channel: SageMaker sets SM_CHANNEL_MODEL to its folder
MODEL_CHANNEL_DIR = f"/opt/ml/input/data/{MODEL_CHANNEL}"
TEACHER_CHANNEL = "teacher"  # a fine-tuned teacher downloaded from S3 for super-network training
TEACHER_CHANNEL_DIR = f"/opt/ml/input/data/{TEACHER_CHANNEL}"

ROLE_ENV_VAR = "SAGEMAKER_ROLE_ARN"
SUPERNET_DONE_FILE = "results.json"  # train_supernet.py writes it last, after the final checkpoint
MAX_BASE_NAME_LENGTH = 48  # 63 (SageMaker) minus the 15 characters of the SDK's "-YYYYmmddHHMMSS"
VALID_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
RUNNING_OR_DONE = ("InProgress", "Completed", "Stopping")
FAILED_OR_STOPPED = ("Failed", "Stopped")
# Only the entry scripts, the nas_llm package and the core requirements are uploaded: never local checkpoints,
# data, caches or dotfiles; the container does not install the packages that only launch jobs, test or run DeepSpeed.
CONTAINER_REQUIREMENTS = "requirements-core.txt"
PACKAGE = "nas_llm"  # the library the entry scripts import, uploaded with them
PROJECT_DIR = Path(__file__).resolve().parents[2]  # the repository: entry scripts on top, nas_llm/ below


@dataclass(frozen=True)
class GridAxis:
    """A setting that is one value in a single launcher and a comma-separated list in a grid launcher."""

    flag: str
    grid_flag: str
    choices: tuple[str, ...] | None  # None: integers
    default: str | int
    help: str


TASK = GridAxis("task_name", "task_names", TASKS, "rte", "task (GLUE, imdb or swag)")
SEED = GridAxis("seed", "seeds", None, 0, "seed of the super-network training and of its searches")
SAMPLING_STRATEGY = GridAxis(
    "sampling_strategy", "sampling_strategies", SAMPLING_STRATEGIES, "one_shot", "super-network training strategy"
)
SEARCH_SPACE = GridAxis("search_space", "search_spaces", SEARCH_SPACES, "small", "sub-network search space")
SEARCH_STRATEGY = GridAxis("search_strategy", "search_strategies", SEARCH_STRATEGIES, "local_search", "searcher")
SUPERNET_AXES = (TASK, SEED, SAMPLING_STRATEGY, SEARCH_SPACE)


def parse_value(axis: GridAxis, text: str) -> str | int:
    """One value of an axis: one of its names, or an integer where it has none (seeds)."""
    if axis.choices is None:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if text not in axis.choices:
        raise argparse.ArgumentTypeError(f"unknown value '{text}'; choose from: {', '.join(axis.choices)}")
    return text


def add_axis_flag(parser: argparse.ArgumentParser, axis: GridAxis, grid: bool) -> None:
    """`--task_name rte` for one job, `--task_names rte,mrpc` for a grid (validated, duplicates dropped)."""
    choices = f" ({', '.join(axis.choices)})" if axis.choices else ""
    if grid:
        def parse_list(text: str) -> list[str | int]:
            values = [parse_value(axis, item.strip()) for item in text.split(",") if item.strip()]
            if not values:
                raise argparse.ArgumentTypeError("give at least one value")
            return list(dict.fromkeys(values))

        parser.add_argument(
            f"--{axis.grid_flag}", type=parse_list, default=str(axis.default),
            help=f"comma-separated, one job each: {axis.help}{choices} (default: {axis.default})",
        )
    else:
        parser.add_argument(
            f"--{axis.flag}", type=lambda text: parse_value(axis, text), default=axis.default,
            help=f"{axis.help}{choices} (default: {axis.default})",
        )


def parse_bool(text: str) -> bool:
    """`--fp16 True` as in the entry scripts (HfArgumentParser's spelling)."""
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not a boolean; use True or False")


def add_supernet_identity_flags(parser: argparse.ArgumentParser, grid: bool) -> None:
    """The settings that name a super-network; the search launchers need them to find its checkpoint."""
    parser.add_argument(
        "--model_name_or_path", default="bert-base-cased",
        help="hub id or short alias of the pre-trained model (default: bert-base-cased)",
    )
    for axis in SUPERNET_AXES:
        add_axis_flag(parser, axis, grid)
    parser.add_argument(
        "--num_train_epochs", type=int, default=20, help="epochs of super-network training (default: 20)"
    )


def add_sagemaker_flags(parser: argparse.ArgumentParser, volume_size_gb: int) -> None:
    """Where and on what the jobs run; the defaults are the original example's."""
    group = parser.add_argument_group("SageMaker")
    group.add_argument(
        "--role", default=os.environ.get(ROLE_ENV_VAR),
        help=f"IAM execution role ARN of the jobs (default: ${ROLE_ENV_VAR}); required unless --dry_run",
    )
    group.add_argument(
        "--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-west-2",
        help="AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION or us-west-2)",
    )
    group.add_argument(
        "--bucket", default=None, help="S3 bucket of all outputs (default: the SDK's sagemaker-<region>-<account>)"
    )
    group.add_argument(
        "--s3_prefix", default="nas_llm",
        help="S3 key prefix: one experiment; change it when you change settings that are not in the S3 layout "
        "(default: nas_llm)",
    )
    group.add_argument("--instance_type", default="ml.g4dn.xlarge", help="default: ml.g4dn.xlarge")
    group.add_argument(
        "--volume_size", type=int, default=volume_size_gb, help=f"GB of instance storage (default: {volume_size_gb})"
    )
    group.add_argument("--max_run", type=int, default=72 * 3600, help="seconds a job may run (default: 72 h)")
    group.add_argument("--use_spot", action="store_true", help="managed spot training (cheaper, may be interrupted)")
    group.add_argument(
        "--max_wait", type=int, default=None,
        help="with --use_spot: seconds of running plus waiting for spot capacity, >= --max_run "
        "(default: --max_run + 24 h)",
    )
    group.add_argument("--framework_version", default="2.8", help="PyTorch training container version (default: 2.8)")
    group.add_argument("--py_version", default="py312", help="its Python (default: py312)")
    group.add_argument("--image_uri", default=None, help="training image to use instead of the PyTorch container")
    group.add_argument(
        "--source_dir", default=str(PROJECT_DIR),
        help=f"project directory whose *.py and {CONTAINER_REQUIREMENTS} run in the container (default: this one)",
    )
    group.add_argument(
        "--relaunch_failed", action="store_true",
        help="launch again where the existing job Failed or was Stopped (by default every existing job is kept)",
    )
    group.add_argument("--dry_run", action="store_true", help="print the job definitions as JSON; no AWS call")


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None,
        help="JSON file of flag values, e.g. {\"task_names\": [\"rte\", \"mrpc\"], \"seeds\": [0, 1]}; "
        "flags on the command line win",
    )


def parse_launcher_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the flags (a grid's --config file supplies defaults) and require a role unless --dry_run."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is not None:
        parser.set_defaults(**read_config(args.config, known=set(vars(args)) - {"config"}))
        args = parser.parse_args(argv)
    if not args.dry_run and not args.role:
        raise UsageError(f"no IAM role: pass --role arn:aws:iam::<account>:role/<name> or set ${ROLE_ENV_VAR}")
    return args


def read_config(path: str, known: set[str]) -> dict[str, str | bool]:
    """Flag defaults from a JSON object of flag names; lists become comma-separated, as on the command line."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read --config {path}: {error}") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config {path} must hold a JSON object of flag names and values")
    unknown = sorted(set(config) - known)
    if unknown:
        raise UsageError(f"unknown keys in {path}: {', '.join(unknown)}; use flag names such as task_names")
    # String defaults go through the flags' parsers like typed values; booleans set the switches.
    return {
        name: value if isinstance(value, bool) else ",".join(map(str, value)) if isinstance(value, list) else str(value)
        for name, value in config.items()
    }


def grid_cells(args: argparse.Namespace, axes: Sequence[GridAxis]) -> list[argparse.Namespace]:
    """One namespace per combination of the axes' lists, holding the flags a single launcher would have."""
    cells = []
    for values in itertools.product(*(getattr(args, axis.grid_flag) for axis in axes)):
        cell = argparse.Namespace(**vars(args))
        for axis, value in zip(axes, values, strict=True):
            delattr(cell, axis.grid_flag)
            setattr(cell, axis.flag, value)
        cells.append(cell)
    return cells


@dataclass(frozen=True)
class S3Layout:
    """Keys under one bucket and prefix (see the module docstring for the folders)."""

    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        return "/".join(part.strip("/") for part in (self.prefix, *parts) if part.strip("/"))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}/"


def s3_layout(args: argparse.Namespace) -> S3Layout:
    """--bucket, else the SDK's default bucket (an AWS call), or a placeholder on --dry_run."""
    if args.bucket:
        bucket = args.bucket
    elif args.dry_run:
        bucket = f"sagemaker-{args.region}-<account-id>"
    else:
        with aws_errors_as_usage_errors():
            bucket = sagemaker_session(args.region, None, None).default_bucket()
    return S3Layout(bucket, args.s3_prefix)


def supernet_folder(args: argparse.Namespace) -> tuple[str, ...]:
    """The super-network's part of the S3 layout: everything that tells two super-networks apart."""
    return (
        args.model_name_or_path.replace("/", "--"), args.task_name, args.sampling_strategy, args.search_space,
        f"epochs_{args.num_train_epochs}", f"seed_{args.seed}",
    )


def supernet_checkpoint_key(layout: S3Layout, args: argparse.Namespace) -> str:
    """Where the training launcher puts a super-network and the search launcher looks for it."""
    return layout.key("supernet", *supernet_folder(args))


def job_base_name(stage: str, readable_parts: Sequence[str | int], unique_key: str) -> str:
    """A deterministic, valid base name: readable parts shortened to fit, then a hash of the job's S3 folder."""
    digest = hashlib.sha256(unique_key.encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-zA-Z0-9]+", "-", "-".join(map(str, (stage, *readable_parts)))).strip("-")
    readable = readable[: MAX_BASE_NAME_LENGTH - len(digest) - 1].rstrip("-")
    return f"{readable}-{digest}"


@dataclass
class SageMakerSettings:
    """Where and on what a job runs: the same for every job of one launcher call."""

    region: str
    role: str | None
    training_image: str
    instance_type: str
    volume_size_gb: int
    max_run_s: int
    use_spot: bool
    max_wait_s: int | None
    source_dir: str
    output_s3_uri: str


def sagemaker_settings(args: argparse.Namespace, layout: S3Layout) -> SageMakerSettings:
    if args.max_run <= 0 or args.volume_size <= 0:
        raise UsageError("--max_run and --volume_size must be positive")
    if args.max_wait is not None and not args.use_spot:
        raise UsageError("--max_wait applies only to spot training; add --use_spot or drop --max_wait")
    max_wait = (args.max_wait or args.max_run + 24 * 3600) if args.use_spot else None
    if max_wait is not None and max_wait < args.max_run:
        raise UsageError(f"--max_wait ({max_wait}) must be at least --max_run ({args.max_run})")
    return SageMakerSettings(
        region=args.region,
        role=args.role,
        training_image=args.image_uri or pytorch_training_image(args),
        instance_type=args.instance_type,
        volume_size_gb=args.volume_size,
        max_run_s=args.max_run,
        use_spot=args.use_spot,
        max_wait_s=max_wait,
        source_dir=str(Path(args.source_dir).resolve()),
        output_s3_uri=layout.uri(layout.key("jobs")),
    )


def pytorch_training_image(args: argparse.Namespace) -> str:
    """The AWS PyTorch training container for the region and instance (looked up offline by the SDK)."""
    try:
        return image_uris.retrieve(
            "pytorch", args.region, version=args.framework_version, py_version=args.py_version,
            instance_type=args.instance_type, image_scope="training",
        )
    except ValueError as error:
        raise UsageError(f"no PyTorch training container: {error}") from None


@dataclass
class JobDefinition:
    """One training job as plain data: what --dry_run prints and what becomes a ModelTrainer."""

    base_job_name: str
    entry_script: str
    hyperparameters: dict[str, str | int | float | bool]
    checkpoint_s3_uri: str  # synced with CHECKPOINT_DIR, where the entry script writes its --output_dir
    tensorboard_s3_uri: str
    sagemaker: SageMakerSettings
    input_channels: dict[str, str] = field(default_factory=dict)  # channel name -> S3 folder
    launch_after_s3_object: str | None = None  # e.g. the search waits for its super-network to be complete


def sagemaker_session(region: str, bucket: str | None, key_prefix: str | None) -> Session:
    """A session whose uploads (code, drivers) go under the launcher's bucket and prefix."""
    return Session(
        boto_session=boto3.Session(region_name=region), default_bucket=bucket, default_bucket_prefix=key_prefix
    )


@contextmanager
def aws_errors_as_usage_errors() -> Iterator[None]:
    """Missing credentials or region are the user's to fix: say so in one line instead of a traceback."""
    try:
        yield
    except (NoCredentialsError, NoRegionError) as error:
        raise UsageError(f"{error}; configure AWS (aws configure, aws sso login or AWS_PROFILE) and retry") from None


def submit(jobs: Sequence[JobDefinition], layout: S3Layout, args: argparse.Namespace) -> None:
    """Print the definitions on --dry_run; else launch each job that does not exist yet, one line per job."""
    if args.dry_run:
        print(json.dumps([asdict(job) for job in jobs], indent=2))
        return
    session = sagemaker_session(args.region, layout.bucket, layout.key("jobs"))
    s3_client = session.boto_session.client("s3")
    with aws_errors_as_usage_errors():
        outcomes = [launch_unless_present(job, session, s3_client, args.relaunch_failed) for job in jobs]
    print(
        f"{outcomes.count('launched')} launched, {outcomes.count('skipped')} already there, "
        f"{outcomes.count('waiting')} waiting for a super-network"
    )


JobFactory = Callable[[argparse.Namespace, S3Layout, SageMakerSettings], list[JobDefinition]]


def single_job(make_job: Callable[[argparse.Namespace, S3Layout, SageMakerSettings], JobDefinition]) -> JobFactory:
    """The jobs of a launcher of one job: the one `make_job` defines from the flags."""
    return lambda args, layout, settings: [make_job(args, layout, settings)]


def run_launcher(
    description: str,
    add_flags: Callable[[argparse.ArgumentParser], None],
    make_jobs: JobFactory,
    argv: Sequence[str] | None,
    check_args: Callable[[argparse.Namespace], None] | None = None,
) -> None:
    """The main() of every launcher: its flags (`description`, the script's docstring, heads --help), then the
    jobs `make_jobs` defines, printed on --dry_run or launched. `check_args` refuses bad flag combinations
    before anything else is done."""
    parser = UsageArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser)
    args = parse_launcher_args(parser, argv)
    if check_args is not None:
        check_args(args)
    layout = s3_layout(args)
    submit(make_jobs(args, layout, sagemaker_settings(args, layout)), layout, args)


def launch_unless_present(job: JobDefinition, session: Session, s3_client, relaunch_failed: bool) -> str:
    """Launch the job unless it would repeat an existing one or its input is missing; returns what happened."""
    existing = existing_training_jobs(session.sagemaker_client, job.base_job_name)
    blocking = duplicate_of(existing, relaunch_failed)
    if blocking:
        print(f"skipped  {job.base_job_name}: {blocking} is {existing[blocking]}")
        return "skipped"
    if job.launch_after_s3_object and not s3_object_exists(s3_client, job.launch_after_s3_object):
        print(f"waiting  {job.base_job_name}: {job.launch_after_s3_object} does not exist yet")
        return "waiting"
    print(f"launched {launch(job, session)}")
    return "launched"


def existing_training_jobs(sagemaker_client, base_job_name: str) -> dict[str, str]:
    """Status of every training job named `<base_job_name>-<the SDK's timestamp>`."""
    statuses = {}
    for page in sagemaker_client.get_paginator("list_training_jobs").paginate(NameContains=base_job_name):
        for summary in page["TrainingJobSummaries"]:
            if summary["TrainingJobName"].startswith(f"{base_job_name}-"):
                statuses[summary["TrainingJobName"]] = summary["TrainingJobStatus"]
    return statuses


def duplicate_of(existing: dict[str, str], relaunch_failed: bool) -> str | None:
    """The existing job a new one would repeat: a running or finished one, or a failed one unless relaunching."""
    keep = RUNNING_OR_DONE if relaunch_failed else RUNNING_OR_DONE + FAILED_OR_STOPPED
    return next((name for name, status in sorted(existing.items()) if status in keep), None)


def s3_object_exists(s3_client, uri: str) -> bool:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    try:
        s3_client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def launch(job: JobDefinition, session: Session) -> str:
    """Create the training job without waiting for it; returns its name (the base name and a timestamp)."""
    with staged_source_dir(Path(job.sagemaker.source_dir), job.entry_script) as source_dir:
        trainer = model_trainer(job, session, source_dir)
        trainer.train(wait=False, logs=False)
    return trainer._latest_training_job.training_job_name  # how the SDK's docs read the created job


@contextmanager
def staged_source_dir(project_dir: Path, entry_script: str) -> Iterator[Path]:
    """A copy of just what the container runs: the entry scripts, the nas_llm package and, as requirements.txt,
    the core requirements."""
    for required in (entry_script, CONTAINER_REQUIREMENTS):
        if not (project_dir / required).is_file():
            raise UsageError(f"--source_dir {project_dir} has no {required}")
    with TemporaryDirectory(prefix="nas_llm_source_") as staging:
        for module in project_dir.glob("*.py"):
            shutil.copy2(module, staging)
        if (project_dir / PACKAGE).is_dir():
            no_caches = shutil.ignore_patterns("__pycache__")
            shutil.copytree(project_dir / PACKAGE, Path(staging) / PACKAGE, ignore=no_caches)
        shutil.copyfile(project_dir / CONTAINER_REQUIREMENTS, Path(staging) / "requirements.txt")
        yield Path(staging)


def model_trainer(job: JobDefinition, session: Session, source_dir: Path) -> ModelTrainer:
    settings = job.sagemaker
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=settings.role,
        base_job_name=job.base_job_name,
        training_image=settings.training_image,
        source_code=SourceCode(
            source_dir=str(source_dir), entry_script=job.entry_script, requirements="requirements.txt"
        ),
        compute=Compute(
            instance_type=settings.instance_type,
            instance_count=1,
            volume_size_in_gb=settings.volume_size_gb,
            enable_managed_spot_training=settings.use_spot,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=settings.max_run_s, max_wait_time_in_seconds=settings.max_wait_s
        ),
        hyperparameters=job.hyperparameters,
        checkpoint_config=CheckpointConfig(s3_uri=job.checkpoint_s3_uri, local_path=CHECKPOINT_DIR),
        output_data_config=OutputDataConfig(s3_output_path=settings.output_s3_uri),
        input_data_config=[
            InputData(channel_name=name, data_source=uri) for name, uri in job.input_channels.items()
        ],
    )
    return trainer.with_tensorboard_output_config(
        TensorBoardOutputConfig(s3_output_path=job.tensorboard_s3_uri, local_path=TENSORBOARD_DIR)
    )
