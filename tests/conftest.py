"""Shared test fixtures: where the parity fixtures and shared data live.

Tests that need ``../shared`` skip with a stated reason when it is absent (a user's fresh clone); CI always
has it. Parity folders come from ``SEEM_PARITY_DIR``, ``SEEM_DEMO_PARITY_DIR`` and ``SSAM_PARITY_DIR``.
"""

from __future__ import annotations

import os

# OpenMP threads busy-wait by default; on a small shared machine that slows the decoder's many small ops 15-60x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEEM_SHARED_DIR", REPO.parent / "shared"))


def _dir(env: str, default: Path) -> Path:
    return Path(os.environ.get(env, default))


SEEM_PARITY_DIR = _dir("SEEM_PARITY_DIR", SHARED / "parity" / "seem")
SEEM_DEMO_PARITY_DIR = _dir("SEEM_DEMO_PARITY_DIR", SHARED / "parity" / "seem_demo")
SSAM_PARITY_DIR = _dir("SSAM_PARITY_DIR", SHARED / "parity" / "semantic_sam")
DATA_DIR = SHARED / "data"


def require(path: Path, what: str) -> Path:
    """Skip (with the reason) when ``path`` does not exist, e.g. on a fresh clone without ../shared."""
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set the env var or provide ../shared)")
    return path


@pytest.fixture(scope="session")
def seem_parity_dir() -> Path:
    return require(SEEM_PARITY_DIR, "SEEM parity fixtures (SEEM_PARITY_DIR)")


@pytest.fixture(scope="session")
def seem_demo_parity_dir() -> Path:
    return require(SEEM_DEMO_PARITY_DIR, "SEEM demo parity fixtures (SEEM_DEMO_PARITY_DIR)")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): on a shared 2-core
    machine OpenMP's spin-waits make 2 threads up to 10x slower for many small ops; results stay within the parity
    READMEs' thread-count tolerances."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _deterministic_threads() -> None:
    torch.manual_seed(0)


def rel_err(ours: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    """max |ours - ref| / max |ref| (the parity metric of the issues); shapes must match exactly."""
    a = torch.as_tensor(np.asarray(ours) if not isinstance(ours, torch.Tensor) else ours).double()
    b = torch.as_tensor(np.asarray(ref) if not isinstance(ref, torch.Tensor) else ref).double()
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != reference {tuple(b.shape)}"
    denom = b.abs().max().item()
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    return diff / denom if denom > 0 else diff


def assert_parity(ours: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, name: str, tol: float = 1e-4):
    """Assert the per-tensor relative error is within ``tol`` (default 1e-4), naming the tensor."""
    e = rel_err(ours, ref)
    assert e <= tol, f"{name}: relative error {e:.3g} > {tol:g}"
