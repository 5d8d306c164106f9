#!/usr/bin/env bash
# Installs schemathesis from PyPI, at the version tests/contract-requirements.txt
# pins, into the virtual environment target/schemathesis that
# tests/tests/api_contract.rs runs, unless it is already there for these
# requirements. Nothing from PyPI runs in Ferry itself: it only checks the REST
# API against its own OpenAPI document.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# The installer tests point these at a copy.
req=${FERRY_CONTRACT_REQUIREMENTS:-$root/tests/contract-requirements.txt}
venv=${FERRY_CONTRACT_VENV:-$root/target/schemathesis}
stamp=$venv/.ferry-requirements
if [ -x "$venv/bin/schemathesis" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "contract-deps: python3 with its venv module is missing: run make test-deps (installs Debian's python3-venv)" >&2
  exit 1
fi
echo "contract-deps: pip install -r $(basename "$req") into $venv"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
