from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny import write_tiny_checkpoint

REPO = Path(__file__).resolve().parent.parent


def real_checkpoint_dir() -> Path | None:
    """The real Qwen2 checkpoint: $CASCADENER_ASSETS, else the first checkpoint under weights/."""
    env = os.environ.get("CASCADENER_ASSETS")
    candidates = [Path(env)] if env else []
    candidates += sorted(p.parent for p in (REPO / "weights").glob("*/config.json"))
    return next((p for p in candidates if (p / "config.json").exists()), None)


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tiny-model tests are all per-operation overhead, and on a busy 2-core machine OpenMP's
    hand-offs between two threads make each small matmul up to 100x slower. Tests of the real
    checkpoint keep every thread."""
    import torch
    if request.node.get_closest_marker("real"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def tiny_untied_ckpt(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "untied", seed=1, tie_word_embeddings=False)


@pytest.fixture(scope="session")
def real_ckpt() -> Path:
    path = real_checkpoint_dir()
    if path is None:
        pytest.skip("real Qwen2 checkpoint not found: set CASCADENER_ASSETS or put one under weights/ "
                    "(see weights/README.md)")
    return path


@pytest.fixture(scope="session")
def real_model_fp32(real_ckpt):
    import torch

    from cascadener import load_model
    return load_model(real_ckpt, torch.float32)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_ckpt):
    from cascadener import load_tokenizer
    return load_tokenizer(tiny_ckpt)


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Every device the engine runs on: the CPU always, CUDA when torch sees one."""
    import torch
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return torch.device(request.param)
