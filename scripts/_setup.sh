# Sourced by scripts/run and scripts/test: makes ./.venv from the committed uv.lock.
#
# Needs only python3 (>= 3.11). uv is used from PATH when present; otherwise it is installed
# once from PyPI into ./.uv (a tiny private virtualenv, so nothing outside the clone changes).
# `uv sync --locked` installs exactly the locked versions, refuses a lock that no longer
# matches pyproject.toml, and takes well under a second when nothing changed.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
if command -v uv >/dev/null 2>&1; then
    uv=uv
else
    uv="$root/.uv/bin/uv"
    if [ ! -x "$uv" ]; then
        "$py" -m venv "$root/.uv"
        "$root/.uv/bin/python" -m pip install --quiet --disable-pip-version-check uv 2>&1 \
            | grep -v "^WARNING: Location" >&2 || true
        [ -x "$uv" ] || { echo "could not install uv into .uv (pip install uv failed)" >&2; exit 1; }
    fi
fi
export UV_PROJECT_ENVIRONMENT="$root/.venv"
# Use this python3, never a downloaded interpreter: a too-old python3 is an error to see.
export UV_PYTHON_DOWNLOADS=never
# shellcheck disable=SC2086  # NB_SYNC holds several words on purpose
"$uv" sync --locked --quiet --python "$py" ${NB_SYNC:-}
