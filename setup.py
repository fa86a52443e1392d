"""Builds the C core and its Cython binding.

SHMRING_SANITIZE=address,undefined (or thread) builds with sanitizers;
SHMRING_DEBUG=1 builds without optimisation and with asserts.
"""

import os
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

cflags = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unused-function"]
ldflags = []
# _GNU_SOURCE is not set here: each C file of the core defines it before its first
# include, and Python.h defines it for the Cython module; a -D here would clash.
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]

if os.environ.get("SHMRING_DEBUG"):
    cflags += ["-O0", "-g3", "-UNDEBUG"]
else:
    # -flto: each public call dispatches into its mode's file (queue.c,
    # broadcast.c); link-time inlining keeps that dispatch free
    cflags += ["-O2", "-flto"]
    ldflags += ["-O2", "-flto"]
sanitize = os.environ.get("SHMRING_SANITIZE")
if sanitize:
    cflags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
    ldflags += [f"-fsanitize={sanitize}"]

# Every C file of the core, whatever it is split into (paths relative to this file,
# as setuptools wants them; sorted so builds are reproducible).
core_sources = sorted(glob("csrc/*.c"))
if not core_sources:
    raise SystemExit("setup.py: no C sources in csrc/ (an incomplete source tree?)")

ext = Extension(
    "shmring._ring",
    sources=["src/shmring/_ring.pyx", *core_sources],
    depends=sorted(glob("csrc/*.h")) + sorted(glob("src/shmring/*.pxd")) + sorted(glob("src/shmring/*.pxi")),
    include_dirs=["csrc", numpy.get_include()],
    define_macros=macros,
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    libraries=["rt"],
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={"language_level": "3"},
        include_path=["src"],
    ),
)
