# Sourced by scripts/run and scripts/test: makes ./.venv with the project installed.
# Idempotent and quick when nothing changed (a stamp of pyproject.toml's hash).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
extra=${NB_EXTRA:-}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=".venv/.installed$extra"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install --quiet -e ".$extra"
    echo "$want" > "$stamp"
fi
