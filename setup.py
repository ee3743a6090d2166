"""Build and install gn_detection and its C++/CUDA extension ``gn_detection._C``.

The CPU kernels are always built. The CUDA kernels are built too when a CUDA
toolkit is found (``torch.utils.cpp_extension.CUDA_HOME``) or ``FORCE_CUDA=1``;
``FORCE_CUDA=0`` builds CPU-only even with a toolkit (quicker development
builds). Without a visible GPU, ``TORCH_CUDA_ARCH_LIST`` defaults to "8.0+PTX"
(native code for Ampere, PTX that newer GPUs compile at load time).

The CPU kernels are compiled once per x86 instruction set (baseline, AVX2,
AVX-512) and chosen at run time from what the processor supports, as ATen does
for its own kernels (see gn_detection/layers/csrc/cpu/). They use GCC vector
extensions that need GCC 12 or newer (``__builtin_shufflevector``, vectors of
``_Float16``); the compiler (``CXX``, default ``c++``, as torch uses) is checked
before anything is compiled.
"""

import glob
import os
import platform
import subprocess
import sys

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

CSRC = os.path.join("gn_detection", "layers", "csrc")
MIN_GCC = 12


def _check_compiler():
    """Says in one line which C++ compiler builds the kernels; stops when it is a
    GCC older than MIN_GCC, which would fail deep inside the kernels' headers."""
    compiler = os.environ.get("CXX", "c++")
    try:
        banner = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
        version = subprocess.run(
            [compiler, "-dumpfullversion", "-dumpversion"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        sys.exit(f"gn_detection: cannot run the C++ compiler {compiler!r} ({error}); set CXX to GCC >= {MIN_GCC}")
    need = f"GCC >= {MIN_GCC} for __builtin_shufflevector and _Float16 vectors"
    if "clang" in banner.lower():
        print(f"gn_detection: C++ compiler {compiler} is clang {version}, not GCC; the CPU kernels need {need}")
        return
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major < MIN_GCC:
        sys.exit(f"gn_detection: C++ compiler {compiler} is GCC {version}; the CPU kernels need {need} (set CXX)")
    print(f"gn_detection: C++ compiler {compiler} is GCC {version} (the CPU kernels need {need})")


def _want_cuda():
    force = os.environ.get("FORCE_CUDA")
    if force is not None:
        return force == "1"
    return CUDA_HOME is not None


def _cuda_library_includes():
    """Headers of the CUDA libraries that torch's CUDA wheels ship (nvidia/*/include).

    A minimal toolkit lacks some headers torch includes (cusparse.h, cublas_v2.h);
    the wheels that torch itself depends on carry them.
    """
    try:
        import nvidia
    except ImportError:
        return []
    roots = list(getattr(nvidia, "__path__", []))
    return sorted(
        path for root in roots for path in glob.glob(os.path.join(root, "*", "include")) if os.path.isdir(path)
    )


def _extension():
    _check_compiler()
    sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")))
    sources += sorted(glob.glob(os.path.join(CSRC, "autograd", "*.cpp")))
    sources += sorted(glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    # -fopenmp: ATen's at::parallel_for is an inline OpenMP loop in this build of
    # torch; compiled without OpenMP it silently runs on one thread. The library
    # it links (libgomp.so.1) is the one torch has already loaded.
    cxx_flags = ["-O3", "-fvisibility=hidden", "-Wno-psabi", "-fopenmp"]
    link_flags = ["-fopenmp"]
    define_macros = []
    include_dirs = [os.path.abspath(CSRC)]
    if platform.machine() in ("x86_64", "AMD64"):
        define_macros.append(("GN_X86_DISPATCH", None))
    if not _want_cuda():
        return CppExtension(
            "gn_detection._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0+PTX"
        print("gn_detection: no GPU visible, building CUDA kernels for TORCH_CUDA_ARCH_LIST=8.0+PTX")
    sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cpp")))
    sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    define_macros.append(("WITH_CUDA", None))
    return CUDAExtension(
        "gn_detection._C",
        sources,
        include_dirs=include_dirs + _cuda_library_includes(),
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
        extra_link_args=link_flags,
    )


setup(
    name="gn_detection",
    version="0.1.0",
    description="Group Normalization for detection and segmentation in detectron2",
    packages=find_packages(exclude=("tests", "tools", "configs")),
    python_requires=">=3.10",
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
)
