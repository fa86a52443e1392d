#!/usr/bin/env bash
# Builds the documentation site (mkdocs, material theme, API reference by mkdocstrings)
# into site/ with --strict, so a broken link or reference fails. Its tools live in
# their own environment, .venv-docs; nothing is compiled (the API is read from src/).
#   scripts/build-docs.sh [mkdocs build options]      (mkdocs serve: .venv-docs/bin/mkdocs serve)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 NO_MKDOCS_2_WARNING=1
if [ ! -x .venv-docs/bin/python ]; then
    "$PY" -m venv .venv-docs
fi
DEPS=("mkdocs>=1.6" "mkdocs-material>=9.5" "mkdocstrings[python]>=0.26" "mkdocs-include-markdown-plugin>=7")
key=$(printf '%s\n' "${DEPS[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv-docs/.deps-installed 2>/dev/null)" != "$key" ]; then
    # see scripts/bootstrap.sh: drop only pip's remark on index locations
    .venv-docs/bin/python -m pip -q install "${DEPS[@]}" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
    echo "$key" > .venv-docs/.deps-installed
fi
# mkdocs-material announces its own end of life on every build; that is not about this site
.venv-docs/bin/python -m mkdocs build --strict --quiet "$@" 2>&1 \
    | { grep -v -e "Material for MkDocs reaches end of life" -e "^\s*│" -e "^\s*$" || true; }
test "${PIPESTATUS[0]}" -eq 0
echo "docs: built into site/ (mkdocs build --strict)"
