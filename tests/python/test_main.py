"""python -m fp6serve behaves as the fp6serve command: output, errors and exit status."""

import subprocess
import sys

from conftest import MODEL, run_cli


def python_m(*args):
    return subprocess.run([sys.executable, "-m", "fp6serve", *args], capture_output=True, text=True, timeout=120)


def test_version_and_help_are_the_commands():
    for args in (["--version"], ["--help"], ["generate", "--help"], ["serve", "--help"]):
        got, want = python_m(*args), run_cli(*args)
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout), args
        assert got.returncode == 0 and got.stdout


def test_generate_prints_what_the_command_prints():
    args = ["generate", "--model", MODEL, "--device", "cpu", "--prompt", "def fibonacci(n):", "--max-new-tokens", "16",
            "--temperature", "0", "--json"]
    got, want = python_m(*args), run_cli(*args)
    assert got.returncode == 0, got.stderr
    assert got.stdout == want.stdout and '"generated_ids"' in got.stdout


def test_errors_exit_as_the_command_does():
    for args, status in ((["--bogus"], 2), (["generate", "--prompt", "x"], 2),
                         (["generate", "--model", "/no/such/model", "--prompt", "x"], 1)):
        got, want = python_m(*args), run_cli(*args, check=False)
        assert got.returncode == want.returncode == status, args
        assert got.stderr == want.stderr and got.stderr
