# nano-banana-bot: the locked dependencies (uv.lock) in a virtualenv, a CJK-capable font for the
# usage chart, a non-root user, data on a volume, and a health check that says whether the bot
# is connected to Discord.
#
#   docker build -t nano-banana-bot .
#   docker run -d --name nano-banana --env-file .env -v nb-data:/data nano-banana-bot
#
# A bind-mounted data folder must be writable by uid 10001 (`chown 10001 ./data`); otherwise
# the bot stops at once with one line saying so.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install exactly uv.lock into /opt/venv (not editable: the source is not kept)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
# uv from PyPI, pinned to the version that wrote uv.lock.
RUN pip install --no-compile "uv==0.13.9"
WORKDIR /src
# Dependencies first: this layer is reused until uv.lock or pyproject.toml change.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project --python /usr/local/bin/python3
COPY README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY migrations ./migrations
RUN uv sync --locked --no-dev --no-editable --python /usr/local/bin/python3

# ---- runtime
FROM ${PYTHON_IMAGE}
# fontconfig lets the bot find the font (fc-match); WenQuanYi Micro Hei draws Latin and CJK
# (5 MB, where Noto CJK would add 90 MB).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fontconfig fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin nanobanana \
    && mkdir -p /data && chown nanobanana /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NB_DATA_DIR=/data
USER nanobanana
# Not /src: the installed package (with its migrations) is what runs, from any directory.
WORKDIR /data
VOLUME ["/data"]
# `docker stop` sends SIGTERM; the bot stops within 5 s (docker waits 10 before SIGKILL).
STOPSIGNAL SIGTERM
# Healthy = the bot's heartbeat (written every 15 s) is fresh and says "connected".
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["nano-banana-bot", "health"]
# The console script, not `python -m bot`: -m puts the working directory (the writable /data
# volume) first on sys.path, where a planted bot/ package would run instead.
CMD ["nano-banana-bot", "run"]
