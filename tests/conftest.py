"""Shared fixtures; the helpers they build on are in support.py and tiny_runs.py."""

from __future__ import annotations

import logging
import socket
import urllib.request
from types import SimpleNamespace

import pytest
import torch
from support import BUCKET, FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, FAMILY_NAMES, REGION
from tiny_runs import ToyRun, train, train_toy

torch.set_num_threads(1)  # tiny models: more threads only add synchronisation overhead


@pytest.fixture(params=FAMILY_NAMES)
def family_name(request) -> str:
    return request.param


TINY_BERT_WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "mat", "is", "good", "bad", "movie", ".", ",", '"')


@pytest.fixture
def tiny_bert_tokenizer(tmp_path_factory):
    """A lower-casing BERT WordPiece tokenizer over a few words, built offline from a vocab.txt."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert_tokenizer")
    special_tokens = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    (folder / "vocab.txt").write_text("\n".join(special_tokens + TINY_BERT_WORDS) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder), model_max_length=64)


@pytest.fixture(scope="session")
def trained_bert(tmp_path_factory):
    """(model_dir, data_dir, checkpoint) of a tiny BERT super-network (one_shot, small space) trained once for the
    session; tests read it and write elsewhere."""
    return train(tmp_path_factory.mktemp("trained_bert"), "bert")


@pytest.fixture(scope="session")
def toy_classification(tmp_path_factory) -> ToyRun:
    """A tiny BERT super-network trained once for the session on a learnable toy sentiment task; read only."""
    return train_toy(tmp_path_factory.mktemp("toy_classification"), regression=False)


@pytest.fixture(scope="session")
def toy_regression(tmp_path_factory) -> ToyRun:
    """The same on the toy task's regression scores; read only."""
    return train_toy(tmp_path_factory.mktemp("toy_regression"), regression=True)


# The SageMaker launchers' tests: a local moto server, fake credentials, and no network beyond it.
@pytest.fixture
def only_local_network(monkeypatch):
    """Record and refuse every name lookup but the moto server's, so that nothing reaches the internet."""
    refused = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            refused.append(host)
            raise socket.gaierror(f"the tests are offline: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert refused == []


@pytest.fixture(scope="session")
def moto_url():
    """moto on 127.0.0.1 in this process; its tracebacks for calls it lacks (iam:SimulatePrincipalPolicy, which
    the SDK makes and tolerates failing) stay out of the output."""
    from moto.server import ThreadedMotoServer  # imported here: only the launchers' tests need moto

    werkzeug_logger = logging.getLogger("werkzeug")
    level = werkzeug_logger.level
    werkzeug_logger.setLevel(logging.CRITICAL)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    werkzeug_logger.setLevel(level)


@pytest.fixture
def fake_credentials(monkeypatch, tmp_path):
    """Fake keys and region, no local AWS profile or SDK config, and the SDK's telemetry kept at home.

    ModelTrainer.train reports to https://sm-pysdk-t-<region>.s3.<region>.amazonaws.com (only_local_network
    catches it). The SDK's opt-out is a config file, but with any config file the SDK validates it against its
    JSON schema on every lookup, about 3 s per job, so the sender is replaced instead.
    """
    from sagemaker.core.telemetry import telemetry_logging

    from nas_llm.cloud import sagemaker_jobs

    for name in (
        "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL", "SAGEMAKER_USER_CONFIG_OVERRIDE",
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE", sagemaker_jobs.ROLE_ENV_VAR,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(telemetry_logging, "_send_telemetry_request", lambda *args, **kwargs: None)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no_aws_config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no_aws_credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def aws(moto_url, fake_credentials, monkeypatch):
    """A fresh moto state with one bucket; boto3 sends the launchers' and the SDK's calls to it.

    AWS_ENDPOINT_URL reaches every client the SDK makes except STS (it pins the regional STS endpoint), and
    with --bucket nothing asks STS; SAGEMAKER_VALIDATE_ROLE=false skips the SDK's IAM policy simulation.
    """
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return SimpleNamespace(s3=s3, sagemaker=boto3.client("sagemaker"))
