"""The PEP 517 build backend of `pip install .` (pyproject.toml), standard library only.

It configures and builds the repository with CMake (the Debian packages of tools/setup.sh,
python3-dev and pybind11-dev), for the Python that runs pip, then zips what the build laid out
in <build>/python/fp6serve/ (the Python sources, the extension module fp6serve._native and the
fp6serve command) into a wheel for pip to install.

Config settings (pip install . --config-settings KEY=VALUE):
  build-dir=DIR     the CMake build directory (default: build-pip/ in the repository). One
                    already configured is only built (its own cache settings stand), so
                    `--config-settings build-dir=build` packages what tools/setup.sh built.
  cmake-args=ARGS   extra arguments for configuring a new build directory, e.g.
                    --config-settings cmake-args=-DFP6SERVE_CUDA=OFF.
"""

import base64
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _version():
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        m = re.search(r"project\(fp6serve\s+VERSION\s+([0-9.]+)", f.read())
    if not m:
        raise RuntimeError("fp6serve_build: no project(fp6serve VERSION ...) in CMakeLists.txt")
    return m.group(1)


def _tag():
    if sys.implementation.name != "cpython":
        raise RuntimeError(f"fp6serve_build: the extension module is built for CPython, not {sys.implementation.name}")
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    platform = re.sub(r"[-.]", "_", sysconfig.get_platform())
    return f"{py}-{py}-{platform}"


def _setting_list(settings, key):
    value = settings.get(key, [])
    values = [value] if isinstance(value, str) else list(value)
    return [arg for v in values for arg in shlex.split(v)]


def _run(cmd):
    print("fp6serve_build:", " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)


def _build(settings):
    if shutil.which("cmake") is None:
        raise RuntimeError("fp6serve_build: cmake not found; install the build dependencies: bash tools/setup.sh "
                           "(or apt-get install cmake ninja-build g++ ...; docs/python.md)")
    build = os.path.abspath(os.path.join(ROOT, settings.get("build-dir", "build-pip")))
    if not os.path.exists(os.path.join(build, "CMakeCache.txt")):
        cmd = ["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DFP6SERVE_PYTHON=ON",
               "-DFP6SERVE_BUILD_TESTS=OFF", "-DFP6SERVE_BUILD_BENCH=OFF", f"-DPython_EXECUTABLE={sys.executable}"]
        if shutil.which("ninja"):
            cmd += ["-G", "Ninja"]
        _run(cmd + _setting_list(settings, "cmake-args"))
    package = os.path.join(build, "python", "fp6serve")
    if not os.path.isdir(package):
        raise RuntimeError(f"fp6serve_build: {build} was configured without the Python package (FP6SERVE_PYTHON=OFF, "
                           "or python3-dev or pybind11-dev missing then): reconfigure it or give another build-dir")
    _run(["cmake", "--build", build, "--target", "fp6serve_python"])
    module = "_native" + sysconfig.get_config_var("EXT_SUFFIX")
    if not os.path.exists(os.path.join(package, module)):
        found = [f for f in os.listdir(package) if f.startswith("_native")] if os.path.isdir(package) else []
        raise RuntimeError(f"fp6serve_build: {build} holds no {module} for this Python ({sys.executable}); "
                           f"found {found or 'none'}: give another build-dir")
    return package


def _digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _metadata(version):
    return (f"Metadata-Version: 2.1\nName: fp6serve\nVersion: {version}\n"
            "Summary: Serve large language models with FP6 (FPx) weight-only quantization\n"
            "Requires-Python: >=3.9\n").encode()


def _wheel_file(tag):
    return f"Wheel-Version: 1.0\nGenerator: fp6serve_build\nRoot-Is-Purelib: false\nTag: {tag}\n".encode()


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    # Without building: pip asks for the metadata before it builds the wheel.
    version = _version()
    dist_info = f"fp6serve-{version}.dist-info"
    os.makedirs(os.path.join(metadata_directory, dist_info), exist_ok=True)
    with open(os.path.join(metadata_directory, dist_info, "METADATA"), "wb") as f:
        f.write(_metadata(version))
    with open(os.path.join(metadata_directory, dist_info, "WHEEL"), "wb") as f:
        f.write(_wheel_file(_tag()))
    return dist_info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    package = _build(config_settings or {})
    version = _version()
    tag = _tag()
    dist_info = f"fp6serve-{version}.dist-info"
    wheel = os.path.join(wheel_directory, f"fp6serve-{version}-{tag}.whl")
    records = []

    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        def add(name, data, mode=0o644):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
            records.append(f"{name},{_digest(data)},{len(data)}")

        # The build's package folder links the sources and the command: the wheel holds the files.
        for folder, dirs, files in os.walk(package, followlinks=True):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                if f.endswith((".pyc", ".pyo")):
                    continue
                path = os.path.join(folder, f)
                with open(path, "rb") as fh:
                    data = fh.read()
                name = "fp6serve/" + os.path.relpath(path, package).replace(os.sep, "/")
                add(name, data, 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644)
        add(f"{dist_info}/METADATA", _metadata(version))
        add(f"{dist_info}/WHEEL", _wheel_file(tag))
        record = f"{dist_info}/RECORD"
        z.writestr(zipfile.ZipInfo(record, date_time=(1980, 1, 1, 0, 0, 0)),
                   "\n".join(records + [f"{record},,"]) + "\n")
    return os.path.basename(wheel)
