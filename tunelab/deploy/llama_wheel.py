"""Build llama-cpp-python's wheel with a CPU backend per x86 level, once per machine.

    python tunelab/deploy/llama_wheel.py SDIST.tar.gz CACHE_DIR   -> prints the wheel's path

Run by `make setup` before tunelab is installed, so it imports nothing from tunelab (the
standard library only). llama-cpp-python has no CPU wheel on PyPI: this builds one from its
source distribution with the system cmake and gcc, with the options in CMAKE_ARGS (the
Makefile's) plus ``GGML_BACKEND_DL`` and ``GGML_CPU_ALL_VARIANTS``: ggml's CPU backend is
built once per x86 level (libggml-cpu-haswell.so, -skylakex, ...), and at run time
``tunelab.deploy.llama_runtime.cpu_backend`` loads the best one the CPU runs. One wheel
then runs on every x86-64 box and uses AVX-512 and AMX where a box has them.

ggml's own list is 14 levels, ~35 s of compiling each on 2 cores (~8 min on top of the
build). ``KEEP`` is the six that matter for the machines tunelab runs on (the whole build
with them: 8-9 min on 2 cores, against 3.6 min for one AVX2 backend); the other lines of
the list are deleted from ggml's CMakeLists.txt in the unpacked copy (ggml has no option
for a subset), and a list that no longer has the expected shape stops the build with one
line.

The wheel goes to CACHE_DIR/llama-cpp-python-VERSION-KEY/, KEY a hash of the version, the
options and the kept levels: pip's own wheel cache is keyed by the source alone and would
hand back a wheel built with other options.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# The CPU backends built (ggml's names): the fallback for any x86-64, AVX2 (every box here),
# AVX-512 (Skylake-X; Ice Lake's VBMI/VNNI; AMD Zen 4's BF16), AMX (Sapphire Rapids Xeon).
KEEP = ("x64", "haswell", "skylakex", "icelake", "zen4", "sapphirerapids")
DL_OPTIONS = "-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
# ggml installs the backend libraries to CMAKE_INSTALL_BINDIR (the wheel's bin/); the
# loader looks next to libggml.so, in llama_cpp/lib.
INSTALL_OPTIONS = "-DCMAKE_INSTALL_BINDIR=llama_cpp/lib"
VARIANTS_FILE = "vendor/llama.cpp/ggml/src/CMakeLists.txt"
X86_BLOCK = re.compile(r'if \(GGML_CPU_ALL_VARIANTS\).*?if \(GGML_SYSTEM_ARCH STREQUAL "x86"\)\n'
                       r'(.*?)\n\s*elseif', re.S)
VARIANT_LINE = re.compile(r"^\s*ggml_add_cpu_backend_variant\((\S+?)[\s)].*\n", re.M)


class BuildError(Exception):
    pass


def keep_variants(cmake_text: str, keep: tuple[str, ...] = KEEP) -> str:
    """ggml's CMakeLists.txt with only the x86 CPU variants in ``keep``."""
    block = X86_BLOCK.search(cmake_text)
    if block is None:
        raise BuildError(f"{VARIANTS_FILE}: no x86 block of CPU variants; this llama.cpp "
                         "lays them out differently (update tunelab/deploy/llama_wheel.py)")
    listed = VARIANT_LINE.findall(block.group(1))
    missing = sorted(set(keep) - set(listed))
    if missing:
        raise BuildError(f"{VARIANTS_FILE}: no CPU variant {', '.join(missing)} to keep "
                         f"(it lists {', '.join(listed)})")
    kept = VARIANT_LINE.sub(lambda line: line.group(0) if line.group(1) in keep else "",
                            block.group(1))
    return cmake_text[:block.start(1)] + kept + cmake_text[block.end(1):]


def cmake_args() -> str:
    return " ".join(filter(None, (os.environ.get("CMAKE_ARGS", ""), DL_OPTIONS,
                                  INSTALL_OPTIONS)))


def wheel_dir(cache: Path, sdist: Path) -> Path:
    version = sdist.name.removesuffix(".tar.gz").rpartition("-")[2]
    key = hashlib.sha256("\n".join((sdist.name, cmake_args(), *KEEP)).encode()).hexdigest()
    return cache / f"llama-cpp-python-{version}-{key[:16]}"


def build(sdist: Path, cache: Path) -> Path:
    """The cached wheel for ``sdist``, built first when there is none."""
    target = wheel_dir(cache, sdist)
    found = sorted(target.glob("*.whl"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(prefix="llama-wheel-") as scratch:
        scratch = Path(scratch)
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch, filter="data")
        source = next(path for path in scratch.iterdir() if path.is_dir())
        variants = source / VARIANTS_FILE
        variants.write_text(keep_variants(variants.read_text()))
        print(f"building llama-cpp-python with CPU backends {', '.join(KEEP)} "
              "(~8 min on 2 cores, once per machine)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-cache-dir", "-w", str(scratch / "wheel"), str(source)],
                       check=True, env={**os.environ, "CMAKE_ARGS": cmake_args()})
        built = next((scratch / "wheel").glob("*.whl"))
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shutil.copy2(built, partial / built.name)
        try:
            partial.rename(target)
        except OSError:  # another `make setup` cached its wheel first: the same build
            shutil.rmtree(partial, ignore_errors=True)
    return target / built.name


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        print(build(Path(argv[0]), Path(argv[1])))
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"error: building llama-cpp-python failed (exit {err.returncode})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
