#!/bin/sh
# Builds {{wasm}} from app.py: installs componentize-py into .venv once, then makes the component.
set -eu
cd "$(dirname "$0")"
if [ "$(.venv/bin/componentize-py --version 2>/dev/null | awk '{print $2}')" != "{{componentize_py}}" ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "componentize-py=={{componentize_py}}"
fi
.venv/bin/componentize-py -d wit -w plugin componentize app -o {{wasm}}
echo "built {{wasm}}"
