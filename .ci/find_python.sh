#!/usr/bin/env bash
# Print the path of an installed Python X.Y interpreter (default 3.12); exit 1 if there is none.
# Looks at $EXECUTOR_PYTHON312, pyenv's versions, uv's known interpreters and PATH; never
# downloads one. Usage: PY=$(bash .ci/find_python.sh 3.12)
set -uo pipefail
cd "$(dirname "$0")/.."
want="${1:-3.12}"
is_wanted() {
  [[ -n "$1" && -x "$1" ]] &&
    "$1" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" 2>/dev/null
}
pyenv_root=$(command -v pyenv >/dev/null && pyenv root 2>/dev/null || true)
for candidate in "${EXECUTOR_PYTHON312:-}" \
  ${pyenv_root:+"$pyenv_root"/versions/"$want"*/bin/python"$want"} \
  "$(UV_PYTHON_DOWNLOADS=never python3 .ci/uv.py python find --no-project "$want" 2>/dev/null)" \
  "$(command -v "python$want")"; do
  if is_wanted "$candidate"; then
    readlink -f "$candidate"
    exit 0
  fi
done
exit 1
