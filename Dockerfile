# leadstream worker / CLI image (used by docker-compose.yml). It runs as the unprivileged
# user leadstream (uid/gid 10001), which owns /data (LEADSTREAM_HOME: model snapshots and
# worker state); the package is installed (not editable) as root, read-only to it.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 leadstream \
 && useradd --system --uid 10001 --gid leadstream --home-dir /data --no-create-home \
    --shell /usr/sbin/nologin leadstream
WORKDIR /app
COPY pyproject.toml README.md topics.yaml ./
COPY leadstream leadstream
COPY streams streams
COPY models models
COPY features features
COPY ops ops
COPY schemas schemas
RUN pip install --no-cache-dir . \
 && mkdir -p /data \
 && chown leadstream:leadstream /data
ENV LEADSTREAM_WEB_BIND=0.0.0.0 LEADSTREAM_HOME=/data
VOLUME /data
EXPOSE 6066
USER 10001:10001
# compose's healthcheck is `python -m leadstream.ops.healthcheck` (/health/ready) on the workers only:
# the same image runs one-shot commands (topics apply, simulate) that serve no HTTP
ENTRYPOINT ["leadstream"]
CMD ["worker"]
