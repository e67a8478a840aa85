#!/usr/bin/env bash
# Regenerate launch/requirements-cpu.lock: resolve pyproject.toml's dependencies (with the
# test extra) in a scratch venv and freeze the result.
#
#   bash launch/lock.sh
#
# The lock is what launch/setup.sh installs with --no-deps; commit it with the change to
# pyproject.toml that required it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

"$python" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet "$repo[test]" 2>&1 | { grep -v "is ignored" || true; }
{
  echo "# Exact CPU environment of skill-factory (Python 3.11). Regenerate: bash launch/lock.sh"
  # A CPU machine installs torch's "+cpu" wheel; the lock names the plain release so that a
  # GPU machine gets the CUDA build of the same version.
  "$scratch/venv/bin/python" -m pip freeze --exclude skill-factory \
    | sed -e 's/^torch==\([0-9.]*\)+cpu$/torch==\1/' | sort -f
} > "$repo/launch/requirements-cpu.lock"
echo "wrote $repo/launch/requirements-cpu.lock ($(grep -vc '^#' "$repo/launch/requirements-cpu.lock") packages)"
