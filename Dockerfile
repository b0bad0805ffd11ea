# leadstream worker / CLI image (used by docker-compose.yml)
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md topics.yaml ./
COPY leadstream leadstream
COPY streams streams
COPY models models
COPY features features
COPY ops ops
COPY schemas schemas
RUN pip install --no-cache-dir -e .
ENV LEADSTREAM_WEB_BIND=0.0.0.0 LEADSTREAM_HOME=/data
VOLUME /data
ENTRYPOINT ["leadstream"]
CMD ["worker"]
