#!/usr/bin/env bash
# Build the Vercel deployment offline, the way Vercel builds it, and check the result.
#
#   bash .ci/vercel_build.sh            build, check .vercel/output, run the bundle tests
#   bash .ci/vercel_build.sh --no-test  build and check only (used by tests/test_vercel_bundle.py)
#
# - The Vercel CLI is installed from npm into .data/vercel-cli (once; VERCEL_CLI_VERSION pins it).
# - The build runs in a staging copy, .data/vercel-build, of the files git would deploy (tracked
#   and untracked-but-not-ignored): never the checkout itself, whose .venv/.data are not part of a
#   deployment and where the builder would write a .python-version file (3.12) that breaks pyenv
#   shims and uv's choice of interpreter on this machine.
# - No Vercel account: a throwaway .vercel/project.json stands in for `vercel link`.
# - Python: the function runtime is python3.12, so a 3.12 interpreter must be on PATH for the
#   builder; it is found (pyenv, uv, PATH) and never downloaded (UV_PYTHON_DOWNLOADS=never).
#   Without Node/npm or a Python 3.12 the step is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN_TESTS=1
[[ "${1:-}" == "--no-test" ]] && RUN_TESTS=0

VERCEL_CLI_VERSION="${VERCEL_CLI_VERSION:-50.44.0}" # vercel@64 fails to resolve a dependency
CLI_DIR="$ROOT/.data/vercel-cli"
STAGE="$ROOT/.data/vercel-build"
RUNTIME=python3.12
export UV_PYTHON_DOWNLOADS=never VERCEL_TELEMETRY_DISABLED=1 NO_UPDATE_NOTIFIER=1
export NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false
unset VIRTUAL_ENV UV_PROJECT_ENVIRONMENT

say() { printf -- '--- %s\n' "$*"; }
started=$SECONDS

# ---- tools -------------------------------------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "SKIPPED: Node.js/npm not found (the Vercel CLI needs them)"
  exit 0
fi

PY312=$(bash .ci/find_python.sh 3.12 || true)
if [[ -z "$PY312" ]]; then
  say "SKIPPED: no Python 3.12 interpreter on this machine (Vercel's runtime is $RUNTIME)"
  exit 0
fi

# The real uv binary, not a pyenv shim: a shim fails in a directory whose .python-version
# names a version that lacks uv (the builder writes one into the staging copy).
UV=""
for candidate in "$(command -v pyenv >/dev/null && pyenv which uv 2>/dev/null || true)" \
  "$(readlink -f "$(command -v uv || true)" 2>/dev/null || true)" "$ROOT/.data/tools/bin/uv"; do
  if [[ -n "$candidate" && -x "$candidate" && "$(head -c 2 "$candidate")" != "#!" ]]; then
    UV=$candidate
    break
  fi
done
if [[ -z "$UV" ]]; then
  python3 .ci/uv.py --version >/dev/null # installs uv into .data/tools when missing
  UV="$ROOT/.data/tools/bin/uv"
fi
mkdir -p "$CLI_DIR/bin"
ln -sf "$PY312" "$CLI_DIR/bin/python3.12"
ln -sf "$UV" "$CLI_DIR/bin/uv"
export PATH="$CLI_DIR/bin:$PATH"
say "python: $PY312 ($("$PY312" -V)); uv: $UV ($("$UV" --version))"

VERCEL="$CLI_DIR/node_modules/.bin/vercel"
installed=$(node -p "require('$CLI_DIR/node_modules/vercel/package.json').version" 2>/dev/null || true)
if [[ "$installed" != "$VERCEL_CLI_VERSION" ]]; then
  say "installing vercel@$VERCEL_CLI_VERSION into .data/vercel-cli"
  [[ -f "$CLI_DIR/package.json" ]] || echo '{"private": true}' >"$CLI_DIR/package.json"
  (cd "$CLI_DIR" && npm install --no-save --loglevel=error "vercel@$VERCEL_CLI_VERSION" >/dev/null)
fi
say "$("$VERCEL" --version 2>/dev/null | tail -n 1)"

# ---- staging copy of what a deployment contains -------------------------------------------
rm -rf "$STAGE"
mkdir -p "$STAGE"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard
else
  find . \( -name .git -o -name .venv -o -name .data -o -name node_modules -o -name .vercel \) \
    -prune -o -type f -print0
fi | while IFS= read -r -d '' file; do
  [[ -f "$file" ]] && printf '%s\0' "$file"
done | xargs -0 -r cp --parents -t "$STAGE"
say "staged $(find "$STAGE" -type f | wc -l) files in .data/vercel-build"

build() { # $1: the dashboard's Framework Preset, as JSON (null = "Other")
  rm -rf "$STAGE/.vercel/output" "$STAGE/.python-version"
  mkdir -p "$STAGE/.vercel"
  printf '{"projectId":"prj_executor_ci","orgId":"team_executor_ci","settings":{"framework":%s}}\n' \
    "$1" >"$STAGE/.vercel/project.json"
  say "vercel build --yes (dashboard preset: $1)"
  if ! (cd "$STAGE" && "$VERCEL" build --yes >"$STAGE/.vercel/build.log" 2>&1); then
    cat "$STAGE/.vercel/build.log"
    exit 1
  fi
  grep -E "Python|Build Completed|[Ww]arning|Error" "$STAGE/.vercel/build.log" | sed 's/^/    /' || true
}

check() {
  python3 .ci/check_vercel_output.py "$STAGE" --runtime "$RUNTIME" --max-mb 250
}

# Vercel detects FastAPI in pyproject.toml and proposes that preset on import; vercel.json's
# "framework": null must override it, so that build must come out the same.
build '"fastapi"'
check >/dev/null || { check; exit 1; }
say "a project left on the FastAPI preset builds the same deployment"
# The preset the README tells users to choose ("Other"): the build the bundle test runs.
build null
check

if [[ "$RUN_TESTS" == 1 ]]; then
  say "bundle tests: the built function in a fresh interpreter"
  EXECUTOR_VERCEL_BUILD=1 EXECUTOR_VERCEL_BUILD_ROOT="$STAGE" EXECUTOR_VERCEL_PYTHON="$PY312" \
    python3 .ci/uv.py run pytest -q -p no:cacheprovider tests/test_vercel_bundle.py \
    tests/test_vercel_config.py
fi
say "vercel step done in $((SECONDS - started)) s"
