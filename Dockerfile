# windshift-grpc: the Windshift gRPC API (windshift.events.v1alpha1) on NATS JetStream.
#
#   docker build -t windshift-grpc .
#   docker run --rm -p 8080:8080 -p 8088:8088 -e NATS_URL=nats://nats.example:4222 windshift-grpc
#
# Without NATS_URL the container starts an embedded nats-server with JetStream
# and keeps its data in /data (a volume): fine for trying it out, while
# production points NATS_URL at a NATS cluster, with WINDSHIFT_AUTH_FILE naming
# a tokens file (docs/security.md). docker-compose.yml runs both.
# Settings are environment variables: see `docker run --rm windshift-grpc serve --help`.

FROM python:3.11-slim AS build
WORKDIR /src
# Only what the package needs (see .dockerignore).
COPY pyproject.toml README.md LICENSE ./
COPY windshift ./windshift
COPY windshift_grpc ./windshift_grpc
RUN python -m venv /opt/windshift \
 && /opt/windshift/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/windshift/bin/pip install --no-cache-dir ".[grpc,embedded]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --no-create-home windshift \
 && mkdir -p /data \
 && chown windshift /data
COPY --from=build /opt/windshift /opt/windshift
ENV PATH=/opt/windshift/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GRPC_PORT=8080 \
    HEALTH_PORT=8088 \
    HEALTH_HOST=0.0.0.0 \
    WINDSHIFT_DATA_DIR=/data
USER windshift
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080 8088
# SIGTERM: not ready, new calls refused, calls in flight finish, Events calls
# end cleanly, exit 0 (allow it ~15 s: docker stop -t / stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('HEALTH_PORT', '8088'), timeout=2).status == 200 else 1)"
ENTRYPOINT ["windshift-grpc"]
CMD ["serve"]
