"""pip install (the README's way in) packages the build's module, sources and command into a
wheel that works from where it was installed: here into a temporary folder with --target,
reusing the build directory ctest runs in (-C build-dir), so nothing is compiled twice."""

import os
import subprocess
import sys

import pytest

from conftest import MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(not os.environ.get("FP6SERVE_TEST_BUILD"), reason="needs the build directory (ctest sets it)")
def test_pip_install_gives_a_working_package(tmp_path):
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                        "--config-settings", "build-dir=" + os.environ["FP6SERVE_TEST_BUILD"], ROOT],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    package = target / "fp6serve"
    for name in ("__init__.py", "__main__.py", "_native.pyi", "py.typed", "bin/fp6serve"):
        assert (package / name).is_file() and not (package / name).is_symlink(), name
    assert os.access(package / "bin" / "fp6serve", os.X_OK)
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import fp6serve; p = fp6serve.pipeline(%r, device='cpu');"
            "print(fp6serve.__file__); print(p('Debian is', max_new_tokens=4, ignore_eos=True)[0].generated_length)"
            % MODEL)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(package / "__init__.py"), "4"]
    version = subprocess.run([sys.executable, "-m", "fp6serve", "--version"], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("fp6serve ")
