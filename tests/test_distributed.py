"""torchrun with 2 CPU processes (gloo) equals a single-process run: 2 ranks x batch b/2 == 1 x b."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _engine_models import make_small_series

TESTS = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["STFCAT_PLUGINS"] = "_engine_models"
    env["STFCAT_DATA_DIR"] = str(data)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_two_ranks_equal_one_rank(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    series = make_small_series(tmp_path / "small", tmp_path / "cache")
    common = ["run", "tiny-plain", "--dataset", str(series), "--epochs", "2", "--batch", "4", "--device", "cpu",
              "--seed", "7", "--no-images"]
    single = subprocess.run([sys.executable, "-m", "stfcat", *common, "--out", str(tmp_path / "one")],
                            env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={_free_port()}", "-m", "stfcat", *common, "--out", str(tmp_path / "two")],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert dist.returncode == 0, dist.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model_state"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    # training actually moved the weights away from their initialisation
    torch.manual_seed(7)
    import _engine_models  # noqa: F401

    from stfcat.models import create_model

    init = create_model("tiny-plain", bands=6, ratio=16).state_dict()
    assert not torch.allclose(init["conv.weight"], a["conv.weight"])
    for k, v in one["mean"]["tiny-plain"].items():
        assert two["mean"]["tiny-plain"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    for h1, h2 in zip(one["history"], two["history"], strict=True):
        assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-4)
