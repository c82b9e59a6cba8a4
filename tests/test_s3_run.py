"""A whole run with the store on S3: a real S3 server on 127.0.0.1 (moto) enforcing IAM policies.

The stages run as real ``spheroid`` processes that take their credentials from the experiment
file (``storage_options``), the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) or
fsspec's configuration file, never from the command line. The secret must appear in no output: not in the objects of
the store (metadata, provenance, tables), not in a file written beside it, not in anything the
commands print, even with ``-v`` (logs, worker logs, tracebacks). A user allowed to read but
not to write chunks gets one line naming the store and the denial, and no volume marked done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]
BUCKET = "spheroid-run"


def policy(*statements: tuple[list[str], str]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": a, "Resource": r} for a, r in statements]})


@pytest.fixture(scope="module")
def s3():
    """A moto S3 + IAM server on 127.0.0.1 and three users' keys: ``writer`` (everything),
    ``reader`` (read and list), ``metadata-only`` (may also write ``zarr.json`` documents, not
    chunks). Authorisation is enforced once the users exist."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    from moto import settings

    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    enforced = settings.INITIAL_NO_AUTH_ACTION_COUNT
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        setup = {"endpoint_url": endpoint, "aws_access_key_id": "setup", "aws_secret_access_key": "setup", "region_name": "us-east-1"}
        boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **setup)
        read = (["s3:Get*", "s3:List*", "s3:Head*"], "*")  # moto authorises HEAD as s3:HeadObject (AWS: GetObject)
        users = {
            "writer": policy((["s3:*"], "*")),
            "reader": policy(read),
            "metadata-only": policy(read, (["s3:PutObject"], f"arn:aws:s3:::{BUCKET}/*zarr.json")),
        }
        keys = {}
        for user, document in users.items():
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="access", PolicyDocument=document)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is authorised
        yield {"endpoint": endpoint, "keys": keys}
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = enforced
        server.stop()


def clean_env(**extra: str) -> dict:
    """This process's environment without any AWS or fsspec credentials, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env.update({"AWS_MAX_ATTEMPTS": "1", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}, **extra)
    return env


class Runs:
    """Runs ``spheroid`` commands in one folder and keeps everything they print."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.printed: list[str] = []

    def __call__(self, *args, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run([*SPHEROID, *map(str, args)], cwd=self.cwd, capture_output=True, text=True, timeout=timeout, env=env)
        self.printed += [result.stdout, result.stderr]
        return result


def bucket_objects(s3, prefix: str) -> dict[str, bytes]:
    import boto3

    keys = s3["keys"]["writer"]
    client = boto3.client("s3", endpoint_url=s3["endpoint"], aws_access_key_id=keys["AWS_ACCESS_KEY_ID"], aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
    return out


def parquet_metadata(data: bytes) -> bytes:
    """The key-value metadata of a Parquet file (provenance lives there), decoded."""
    import io

    import pyarrow.parquet as pq

    meta = pq.ParquetFile(io.BytesIO(data)).schema_arrow.metadata or {}
    return b"".join(k + v for k, v in meta.items())


def assert_secret_nowhere(secrets: list[str], texts: list[str], objects: dict[str, bytes], folder: Path) -> None:
    files = {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for secret in secrets:
        needle = secret.encode()
        assert not any(secret in t for t in texts), "a secret was printed"
        for name, data in {**objects, **files}.items():
            assert needle not in data, f"a secret was written to {name}"
            if name.endswith(".parquet"):
                assert needle not in parquet_metadata(data), f"a secret is in the metadata of {name}"


def experiment_file(folder: Path, store: str, raw: Path, **extra) -> Path:
    """An experiment file for ``spheroid run``: two wells of the synthetic plate, every stage."""
    document = {
        "name": "s3 run",
        "store": store,
        "raw": {"inputs": [str(raw)]},
        "plate": {"B2": {"control": True}, "C3": {"condition": "other"}},
        "cluster": {"n_workers": 2, "memory_limit": "3GB"},
        **extra,
    }
    path = folder / f"experiment-{len(list(folder.glob('experiment-*.yaml')))}.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same small experiment through `spheroid run` with a local store: what the S3 run must equal."""
    root = tmp_path_factory.mktemp("s3-local")
    run = Runs(root)
    env = clean_env()
    assert run("-q", "synth", "d", "--timepoints", "3", "--shape", "8", "96", "96", "--wells", "B2,C3", env=env).returncode == 0
    result = run("-q", "run", experiment_file(root, str(root / "exp.zarr"), root / "d/raw"), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return root


def test_a_whole_run_on_s3_keeps_credentials_out_of_every_output(s3, local_run, tmp_path):
    """`spheroid -v run` (convert -> preprocess -> segment -> cellcycle -> track -> report) with the
    store on S3 and the credentials in the experiment file's storage_options; then info and verify
    with the credentials from the environment, and info with them from fsspec's configuration
    file. Labels and tables equal the local run's, the report is in the bucket, and the secret is
    in no object, no file written beside the store and no printed line."""
    from pipeline.io.plate import Plate
    from pipeline.io.tables import read_table

    run = Runs(tmp_path)
    url = f"s3://{BUCKET}/exp.zarr"
    keys = s3["keys"]["writer"]
    options = {"key": keys["AWS_ACCESS_KEY_ID"], "secret": keys["AWS_SECRET_ACCESS_KEY"], "client_kwargs": {"endpoint_url": s3["endpoint"]}}
    experiment = experiment_file(tmp_path, url, local_run / "d/raw", storage_options=options)
    result = run("-v", "run", experiment, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "report: s3://" in result.stdout, result.stdout[-2000:]
    endpoint = ("--storage-option", f"endpoint_url={s3['endpoint']}")
    for command in (("info", url), ("verify", url)):
        result = run("-v", *command, *endpoint, env=clean_env(**keys))
        assert result.returncode == 0, result.stderr[-3000:]
    # credentials from fsspec's configuration file instead of the environment
    conf = tmp_path / "fsspec"
    conf.mkdir()
    (conf / "s3.json").write_text(json.dumps({"s3": options}))
    result = run("-v", "info", url, "--json", env=clean_env(FSSPEC_CONFIG_DIR=str(conf)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert {img["name"]: img["complete"] for img in json.loads(result.stdout)["fields"][0]["images"]} == {"raw": True, "preprocessed": True, "labels/nuclei": True}

    on_s3 = Plate.open(url, storage_options=options)
    local = Plate.open(str(local_run / "exp.zarr"))
    for a, b in zip(local.fields(), on_s3.fields()):
        np.testing.assert_array_equal(a.labels("nuclei")[:], b.labels("nuclei")[:])
        for table in ("nuclei", "tracks"):
            expected, got = read_table(a, table), read_table(b, table)
            assert len(expected) > 0
            np.testing.assert_array_equal(expected.to_numpy(), got.to_numpy())
    objects = bucket_objects(s3, "exp.zarr")
    assert "exp.zarr/report/index.html" in objects and b"s3 run" in objects["exp.zarr/report/index.html"]
    # the two files that hold the secret on purpose: the experiment file and fsspec's configuration
    experiment.unlink()
    (conf / "s3.json").unlink()
    assert_secret_nowhere([keys["AWS_SECRET_ACCESS_KEY"]], run.printed, objects, tmp_path)


def test_denied_writes_are_one_line_and_mark_nothing_done(s3, local_run, tmp_path):
    """A user who may read but not write, and one who may write metadata but not chunks (the
    stage then fails in the middle of writing its first volume): one line naming the store and
    the denial, exit status 1, no volume marked done, and the secret printed nowhere."""
    from pipeline.io.plate import Plate

    run = Runs(tmp_path)
    url = f"s3://{BUCKET}/denied.zarr"
    endpoint = ("--storage-option", f"endpoint_url={s3['endpoint']}")
    assert run("-q", "convert", local_run / "d/raw", "--out", url, "-w", "1", *endpoint, env=clean_env(**s3["keys"]["writer"])).returncode == 0
    before = bucket_objects(s3, "denied.zarr")
    result = run("preprocess", url, "-w", "1", *endpoint, env=clean_env(**s3["keys"]["reader"]))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "permission denied" in lines[0], result.stderr[-2000:]
    assert bucket_objects(s3, "denied.zarr") == before

    result = run("-v", "preprocess", url, "-w", "1", *endpoint, env=clean_env(**s3["keys"]["metadata-only"]))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {url}") and "permission denied" in last, result.stderr[-3000:]
    after = bucket_objects(s3, "denied.zarr")
    assert any("/preprocessed/" in k for k in after), ("the stage did not get as far as writing its metadata", result.stderr[-3000:])
    assert not any("/preprocessed/0/c/" in k for k in after)
    keys = s3["keys"]["writer"]
    plate = Plate.open(url, storage_options={"key": keys["AWS_ACCESS_KEY_ID"], "secret": keys["AWS_SECRET_ACCESS_KEY"], "client_kwargs": {"endpoint_url": s3["endpoint"]}})
    for fld in plate.fields():
        assert not fld.has_image("preprocessed") or not fld.done("preprocessed").any()
    secrets = [s3["keys"][u]["AWS_SECRET_ACCESS_KEY"] for u in ("writer", "reader", "metadata-only")]
    assert_secret_nowhere(secrets, run.printed, after, tmp_path)


def test_an_unreachable_endpoint_is_one_line_and_writes_nothing(tmp_path, local_run):
    run = Runs(tmp_path)
    url = f"s3://{BUCKET}/x.zarr"
    result = run("convert", local_run / "d/raw", "--out", url, "--storage-option", "endpoint_url=http://127.0.0.1:9", env=clean_env(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="not-to-be-printed"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "cannot reach" in lines[0], result.stderr[-2000:]
    assert "not-to-be-printed" not in result.stderr + result.stdout
