#!/usr/bin/env bash
# Installs the dashboard's npm packages into web/node_modules exactly as
# web/package-lock.json pins them (`npm ci`), unless they are already there for this
# lockfile. Nothing from npm runs in the control plane: uPlot is vendored into
# web/vendor and embedded; axe-core is injected by the browser tests.
set -euo pipefail
# FERRY_WEB_DIR: the installer tests point it at a copy.
cd "${FERRY_WEB_DIR:-$(dirname "$0")/../web}"
stamp=node_modules/.ferry-lock
if [ -f "$stamp" ] && cmp -s package-lock.json "$stamp"; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "web-deps: npm is missing: run make test-deps (installs Debian's nodejs and npm)" >&2
  exit 1
fi
echo "web-deps: npm ci (web/package-lock.json)"
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json "$stamp"
