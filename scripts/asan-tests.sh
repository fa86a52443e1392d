#!/usr/bin/env bash
# The Python test suite against an extension built with AddressSanitizer and
# UBSan, in its own environment (.venv-asan). Python itself is not instrumented,
# so the ASan runtime is preloaded and leak checking (CPython's own) is off.
#   scripts/asan-tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-asan/bin/python ]; then
    python3 -m venv .venv-asan
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv-asan/bin/python -m pip install -q -U pip "setuptools>=77" wheel
# the build's and the suite's dependencies: pyproject's "test" extra (the suite imports them all)
mapfile -t test_deps < <(.venv-asan/bin/python - <<'PY'
import re
text = open("pyproject.toml").read()
block = re.search(r'^test = \[(.*?)\]$', text, re.M).group(1)
print("\n".join(re.findall(r'"([^"]+)"', block)))
PY
)
.venv-asan/bin/python -m pip install -q "Cython>=3.1" "numpy>=2" "${test_deps[@]}"
# a regular (not editable) install, so the instrumented module lives in .venv-asan only
rm -rf build
SHMRING_SANITIZE=address,undefined .venv-asan/bin/python -m pip install -q --no-build-isolation --no-deps --force-reinstall .
rm -rf build
so=$(ls .venv-asan/lib/python3*/site-packages/shmring/_ring*.so)
ldd "$so" | grep -q libasan || { echo "the extension was not built with AddressSanitizer" >&2; exit 1; }
echo "extension built with ASan: $so"
LIBASAN=$(gcc -print-file-name=libasan.so)
LIBUBSAN=$(gcc -print-file-name=libubsan.so)
export LD_PRELOAD="$LIBASAN $LIBUBSAN"
# allocator_may_return_null: libzmq mallocs the size a hostile peer's frame claims and copes
# with NULL, as with the real allocator (the bridge's random-bytes test); ASan would abort
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allow_user_segv_handler=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd tests  # import shmring from .venv-asan, not from the source tree
# The C-only checks (SPIN, TSan stress, forced interleavings) build their own
# programs, which must not run with the ASan runtime preloaded: they are left out,
# and so is the type check of the stubs (no C runs there).
exec ../.venv-asan/bin/python -m pytest . -p no:cacheprovider \
    --ignore=test_verify.py --ignore=test_interleavings.py --ignore=test_typing.py "$@"
