"""Test set-up: 8 fake CPU devices (set before jax is imported) and shared fixtures."""

import os
import pathlib

# LLVM optimization level 1 for XLA's CPU backend: the suite compiles hundreds of small programs
# and compiling dominates (a tiny ELECTRA gradient compiles in 6 s instead of 14 s); the HLO
# passes, hence the programs' semantics, are unchanged. Subprocesses inherit it. Level 0 compiles
# faster still but runs some programs so slowly that one fake device misses the deadline of XLA's
# collective rendezvous and the process aborts (the Chinese WWM pretraining test).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_path(*parts: str) -> pathlib.Path:
  """A path under ../shared, or skip the test when it is absent."""
  path = SHARED.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"{path} is absent (../shared is for developers and CI only)")
  return path


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running check (minutes)")
  config.addinivalue_line("markers", "proof: a proof too long for CI (make test-proof; README has its result)")
