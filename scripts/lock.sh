#!/usr/bin/env bash
# Regenerates constraints.txt, the lock that `make`, CI (.ci/run) and the Docker image install from: the newest
# versions pyproject.toml's ranges allow today, resolved in a fresh venv, tested, then frozen. The lock changes only
# when the suite passes on what it would pin:
#
#   scripts/lock.sh            # resolve the newest, run `make test` on them, write constraints.txt if green
#   make test-latest           # only the trial: the suite on the newest allowed versions, the lock untouched
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-latest}
rm -rf "$VENV"
make test VENV="$VENV" LOCK=
tmp=$(mktemp constraints.XXXXXX)
trap 'rm -f "$tmp"' EXIT
{
  echo "# The lock: exact versions that make, CI and the Docker image install (pip's -c). Made by scripts/lock.sh"
  echo "# on $(date -u +%F) with Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'), after the suite passed on them."
  echo "# Ranges for pip users live in pyproject.toml; try newer versions with \`make test-latest\`."
  # torch without its local label (+cpu): `==2.13.0` accepts the CPU and the CUDA builds alike, `==2.13.0+cpu` only one.
  "$VENV/bin/pip" freeze --all --exclude-editable | grep -v -E '^(gptzoo|-e )' | sed -E 's/^(torch==[^+]+)\+.*/\1/' | sort -f
} >"$tmp"
mv "$tmp" constraints.txt
trap - EXIT
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
