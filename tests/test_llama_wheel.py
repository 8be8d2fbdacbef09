"""The llama-cpp-python wheel build (tunelab/deploy/llama_wheel.py): which CPU backends it
keeps from ggml's list, where it caches the wheel, and its one-line errors. The build
itself runs in `make setup`; tests/test_deploy.py checks what it produced."""

from __future__ import annotations

import pytest

from tunelab.deploy import llama_wheel

# The layout of ggml's list in llama.cpp's ggml/src/CMakeLists.txt (abridged): the function
# that builds one variant has an x86 block of its own, before the list.
GGML_CMAKE = """\
function(ggml_add_cpu_backend_variant tag_name)
    if (GGML_SYSTEM_ARCH STREQUAL "x86")
        foreach (feat ${ARGN})
            set(GGML_${feat} ON)
        endforeach()
    elseif (GGML_SYSTEM_ARCH STREQUAL "ARM")
    endif()
endfunction()

if (GGML_CPU_ALL_VARIANTS)
    if (GGML_SYSTEM_ARCH STREQUAL "x86")
        ggml_add_cpu_backend_variant(x64)
        ggml_add_cpu_backend_variant(sse42              SSE42)
        ggml_add_cpu_backend_variant(haswell            SSE42 AVX F16C FMA AVX2 BMI2)
        ggml_add_cpu_backend_variant(skylakex           SSE42 AVX F16C FMA AVX2 BMI2 AVX512)
        ggml_add_cpu_backend_variant(icelake            SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI)
        if (NOT MSVC)
            ggml_add_cpu_backend_variant(cooperlake     SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VNNI AVX512_BF16)
            ggml_add_cpu_backend_variant(zen4           SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16)
        endif()
        ggml_add_cpu_backend_variant(alderlake          SSE42 AVX F16C FMA AVX2 BMI2 AVX_VNNI)
        if (NOT MSVC)
            ggml_add_cpu_backend_variant(sapphirerapids SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8)
        endif()
    elseif(GGML_SYSTEM_ARCH STREQUAL "ARM")
            ggml_add_cpu_backend_variant(armv8.0_1)
    endif()
endif()
"""


def variants(text: str) -> list[str]:
    return [line.split("(")[1].split()[0].rstrip(")") for line in text.splitlines()
            if line.strip().startswith("ggml_add_cpu_backend_variant(")]


def test_only_the_kept_x86_variants_stay_and_nothing_else_changes():
    kept = llama_wheel.keep_variants(GGML_CMAKE)
    assert variants(kept) == ["x64", "haswell", "skylakex", "icelake", "zen4",
                              "sapphirerapids", "armv8.0_1"]
    removed = [line for line in GGML_CMAKE.splitlines() if line not in kept.splitlines()]
    assert [line.split("(")[1].split()[0] for line in removed] == ["sse42", "cooperlake",
                                                                   "alderlake"]
    assert "function(ggml_add_cpu_backend_variant tag_name)" in kept
    assert llama_wheel.keep_variants(kept) == kept


def test_a_list_without_a_kept_variant_stops_the_build():
    text = GGML_CMAKE.replace("variant(zen4 ", "variant(zen5 ")
    with pytest.raises(llama_wheel.BuildError) as raised:
        llama_wheel.keep_variants(text)
    assert str(raised.value) == (
        "vendor/llama.cpp/ggml/src/CMakeLists.txt: no CPU variant zen4 to keep (it lists x64, "
        "sse42, haswell, skylakex, icelake, cooperlake, zen5, alderlake, sapphirerapids)")


def test_a_file_without_the_list_stops_the_build():
    with pytest.raises(llama_wheel.BuildError, match="no x86 block of CPU variants"):
        llama_wheel.keep_variants("project(ggml)\n")


def test_the_cache_key_follows_the_options_and_the_version(monkeypatch, tmp_path):
    sdist = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_NATIVE=OFF")
    first = llama_wheel.wheel_dir(tmp_path / "cache", sdist)
    assert first.parent == tmp_path / "cache"
    assert first.name.startswith("llama-cpp-python-0.3.36-")
    assert llama_wheel.wheel_dir(tmp_path / "cache", sdist) == first
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF")
    assert llama_wheel.wheel_dir(tmp_path / "cache", sdist) != first
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_NATIVE=OFF")
    other = llama_wheel.wheel_dir(tmp_path / "cache", tmp_path / "llama_cpp_python-0.3.37.tar.gz")
    assert other.name.startswith("llama-cpp-python-0.3.37-") and other != first


def test_a_cached_wheel_is_used_without_building(tmp_path):
    sdist = tmp_path / "llama_cpp_python-0.3.36.tar.gz"  # never opened: the wheel is cached
    cached = llama_wheel.wheel_dir(tmp_path, sdist)
    cached.mkdir()
    (cached / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_bytes(b"")
    assert llama_wheel.build(sdist, tmp_path) == \
        cached / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"


def test_the_options_add_runtime_dispatch_to_the_makefiles(monkeypatch):
    monkeypatch.setenv("CMAKE_ARGS", "-DLLAVA_BUILD=OFF")
    assert llama_wheel.cmake_args() == (
        "-DLLAVA_BUILD=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON "
        "-DCMAKE_INSTALL_BINDIR=llama_cpp/lib")
