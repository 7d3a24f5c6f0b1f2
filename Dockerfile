# nano-banana-bot: slim Python base, non-root user, data on a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NB_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY migrations ./migrations
RUN pip install --no-compile . \
    && useradd --system --uid 10001 --home-dir /data nanobanana \
    && mkdir -p /data && chown nanobanana /data

USER nanobanana
VOLUME ["/data"]
CMD ["python", "-m", "bot", "run"]
