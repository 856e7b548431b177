"""Fixtures of the Python package's tests (ctest python.pytest, label cpu).

The package comes from PYTHONPATH (<build>/python, as ctest sets it) or an install; the
fp6serve command to compare with from FP6SERVE_TEST_BUILD (<build>/fp6serve), else the one in
the package. Everything runs on the CPU on the trained model of tests/data/tiny-trained.
"""

import os
import subprocess

import pytest

import fp6serve

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("FP6SERVE_TEST_DATA", os.path.join(HERE, "..", "data"))
MODEL = os.path.join(DATA, "tiny-trained")


def cli_path():
    build = os.environ.get("FP6SERVE_TEST_BUILD")
    if build:
        return os.path.join(build, "fp6serve")
    return os.path.join(os.path.dirname(fp6serve.__file__), "bin", "fp6serve")


def run_cli(*args, check=True):
    """The fp6serve command; its CompletedProcess (text)."""
    # argv[0] "fp6serve", as a shell gives it (the usage line of --help prints it).
    p = subprocess.run(["fp6serve", *args], executable=cli_path(), capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"fp6serve {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


@pytest.fixture(scope="session")
def model_dir():
    return MODEL


@pytest.fixture(scope="session")
def pipe():
    """The trained model in the default mode (wf6af16) on the CPU, shared by the tests."""
    return fp6serve.pipeline(MODEL, device="cpu", progress=False)
