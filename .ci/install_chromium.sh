#!/usr/bin/env bash
# Debian's chromium for the dashboard browser test (tests/test_dashboard_browser.py), installed
# only when /usr/bin/chromium is missing. Idempotent and quiet. Playwright's own browser download
# (`playwright install`) is never used: the test drives /usr/bin/chromium.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: apt-get not found; install chromium at /usr/bin/chromium by hand" >&2
  exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "install_chromium: root (or sudo) is needed to apt-get install chromium" >&2
    exit 1
  fi
fi
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
test -x /usr/bin/chromium
echo "install_chromium: $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)"
