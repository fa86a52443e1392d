"""Builds the C core and its Cython binding.

SHMRING_SANITIZE=address,undefined (or thread) builds with sanitizers;
SHMRING_DEBUG=1 builds without optimisation and with asserts.
"""

import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

cflags = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unused-function"]
ldflags = []
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("_GNU_SOURCE", None)]

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

ext = Extension(
    "shmring._ring",
    sources=["src/shmring/_ring.pyx", *sorted(glob.glob("csrc/*.c"))],
    include_dirs=["csrc", numpy.get_include()],
    depends=sorted(glob.glob("csrc/*.h")),
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
