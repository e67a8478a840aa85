#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv from the exact lock.
#
#   bash launch/setup.sh            # idempotent: a .venv built from the same lock is reused
#   SKILLFACTORY_VENV=/path bash launch/setup.sh
#
# Why a lock installed with --no-deps: the engines' pins only resolve as one exact set
# (see pyproject.toml), and letting pip resolve again on every machine invites silent
# backtracking to other releases. The lock is that set; regenerate it with launch/lock.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SKILLFACTORY_VENV:-$repo/.venv}"
lock="$repo/launch/requirements-cpu.lock"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

lock_hash="$(sha256sum "$lock" | cut -d' ' -f1)"
marker="$venv/.skillfactory-lock"

pip_q() {
  # pip, quiet, without the index-location warnings of some machines; keeps pip's status.
  "$venv/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored" || true; }
  return "${PIPESTATUS[0]}"
}

has_cuda() {
  # A GPU is present when the driver lists one; a CUDA compiler alone does not count.
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"
}

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$lock_hash" ] && [ -x "$venv/bin/python" ]; then
  echo "setup: reusing $venv (lock unchanged)"
else
  if [ -d "$venv" ]; then
    echo "setup: $venv was built from another lock; rebuilding it"
    rm -rf "$venv"
  fi
  echo "setup: creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
  # --no-deps: the lock is complete and exact; no resolver run, no surprises.
  pip_q install --quiet --no-deps -r "$lock"

  if ! has_cuda; then
    # CPU-only machine: PyPI's torchvision and torchaudio are CUDA builds, and next to a
    # CPU torch they fail to import ("operator torchvision::nms does not exist"), which
    # breaks `import transformers`. Text-only training never uses them, so torchvision is
    # removed, and torchaudio's compiled libraries are deleted so that torchaudio still
    # imports in pure-Python mode (llamafactory imports it at top level).
    echo "setup: no CUDA GPU found; removing torchvision and torchaudio's compiled libraries"
    pip_q uninstall --quiet --yes torchvision
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    rm -f "$site"/torchaudio/lib/*.so
  else
    echo "setup: CUDA GPU found; installing the gpu extra (vllm) within the lock"
    constraints="$(mktemp)"
    grep -v '^#' "$lock" > "$constraints"
    pip_q install --quiet "vllm==0.28.0" -c "$constraints"
    rm -f "$constraints"
  fi
  echo "$lock_hash" > "$marker"
fi

# The project itself, editable, so conf/ and rewards/ are used from this checkout.
# Both checks run with -I (isolated: the working directory is not on sys.path), or the
# checkout itself would satisfy `import skill_factory` and the install would be skipped,
# leaving the console script and runs from other directories without the package.
if ! "$venv/bin/python" -I -c "import skill_factory, sys; sys.exit(0 if skill_factory.__file__.startswith('$repo/') else 1)" 2>/dev/null; then
  pip_q install --quiet --no-deps -e "$repo"
fi
"$venv/bin/python" -I -c "import skill_factory, transformers, llamafactory, verl, trl, hydra" \
  || { echo "setup: the environment in $venv does not import; see the messages above" >&2; exit 1; }
echo "setup: ready ($venv)"
