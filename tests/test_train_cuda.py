"""Training on CUDA: deterministic kernels, and a resumed AMP run follows an uninterrupted one."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from pipeline.train.checkpoint import load_checkpoint, make_deterministic
from pipeline.train.loop import train
from tests.test_train_loop import tiny_config, trainset  # noqa: F401  (module fixture)


def test_cpu_is_left_alone():
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    make_deterministic(torch.device("cpu"), True)
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled()) == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_settings_follow_the_config():
    try:
        make_deterministic(torch.device("cuda"), True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"]
        make_deterministic(torch.device("cuda"), False)
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    finally:
        make_deterministic(torch.device("cuda"), False)
        torch.backends.cudnn.benchmark = False


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.filterwarnings("ignore::UserWarning")  # warn_only: kernels without a deterministic form say so
def test_cuda_amp_resume_follows_uninterrupted_run(trainset, tmp_path):  # noqa: F811
    kw = dict(device="cuda", amp=True, deterministic=True, log_every=2)
    train(tiny_config(trainset, tmp_path / "full", **kw), progress=False)

    def interrupt(step, record):
        if step == 4:
            os.kill(os.getpid(), signal.SIGUSR1)

    part = train(tiny_config(trainset, tmp_path / "part", **kw), progress=False, on_step=interrupt)
    assert part.interrupted and part.step == 4
    train(tiny_config(trainset, tmp_path / "part", **kw), progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert a["scaler"] == b["scaler"]  # same loss scale after the same overflow history
    for key, value in a["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, b["model"][key], rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(value, b["model"][key]), key
    losses = lambda c: [r["loss"] for r in c["loop"]["history"] if r.get("kind") == "train"]  # noqa: E731
    assert len(losses(a)) == 3 and losses(a) == pytest.approx(losses(b), rel=1e-3)
