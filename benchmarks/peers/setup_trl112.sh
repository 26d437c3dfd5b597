#!/usr/bin/env bash
# Creates the PPO peer's virtualenv: TRL 1.12.0 (the last release with trl.experimental.ppo.PPOTrainer; it was
# removed in 1.13) next to the same torch / transformers / datasets / accelerate as our own venv, so that the
# benchmark compares trainers, not library versions.
#
#   bash benchmarks/peers/setup_trl112.sh            # -> benchmarks/peers/.venv-trl112
#   PYTHON=python3.11 bash benchmarks/peers/setup_trl112.sh
#
# Idempotent: does nothing when the venv already imports trl 1.12.0 and trl.experimental.ppo.
# Pins come from constraints.txt at the repository root, minus its trl line (it pins the trl 1.16 we use).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${TRL112_VENV:-$here/.venv-trl112}"
python="${PYTHON:-python3}"

check() {
    "$venv/bin/python" - <<'EOF' 2>/dev/null
import trl, transformers, torch
from trl.experimental.ppo import PPOConfig, PPOTrainer
assert trl.__version__ == "1.12.0", trl.__version__
EOF
}

if [ -x "$venv/bin/python" ] && check; then
    echo "trl 1.12 peer venv ready: $venv"
    exit 0
fi

"$python" -m venv "$venv"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
grep -v -E '^\s*trl\s*(==|>=|<=|~=|$)' "$root/constraints.txt" > "$constraints"

"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch 2.13.0: the CPU wheel on this machine's disk (an unpinned torch resolves to a CUDA build elsewhere).
"$venv/bin/python" -m pip install --quiet -c "$constraints" \
    torch==2.13.0 transformers==5.24.0 trl==1.12.0 datasets accelerate
check || { echo "peer venv at $venv does not import trl 1.12.0's PPOTrainer" >&2; exit 1; }
"$venv/bin/python" -c 'import trl, transformers, torch, datasets, accelerate; print("trl", trl.__version__, "transformers", transformers.__version__, "torch", torch.__version__, "datasets", datasets.__version__, "accelerate", accelerate.__version__)'
