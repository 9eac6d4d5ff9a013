# SMS Ops: Slack chat-ops bot for international SMS.
#   docker build -t sms-ops .
#   docker run --env-file .env -p 3000:3000 -v sms-ops-data:/data sms-ops
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
# The README's install step, into a virtual environment that the runtime stage copies.
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --no-cache-dir .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 sms && mkdir /data && chown sms /data
COPY --from=build /opt/venv /opt/venv
COPY groups.example.toml /app/groups.example.toml
# The working directory is the volume: a relative DATABASE_PATH or CONTACT_GROUPS_FILE (say, from a copy
# of .env.example) lands in /data too, never in the image's unwritable file system.
WORKDIR /data
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    DATABASE_PATH=/data/sms-ops.sqlite3 \
    CONTACT_GROUPS_FILE=/data/groups.toml \
    HOST=0.0.0.0 \
    PORT=3000 \
    LOG_FORMAT=json
VOLUME ["/data"]
USER sms
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=2)"]
# The README's start command.
ENTRYPOINT ["python", "-m", "bot"]
