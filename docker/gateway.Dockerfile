# The preftrack gateway: the SDK (its generated API code) and the gateway package, nothing of the trainer.
# `make compose-check` resolves the pip install below for this Python (docker/check_images.py reads the next line).
# python:3.11-slim has been Debian 13 (glibc 2.41) since August 2025; 2.36 (Debian 12) keeps -slim-bookworm working.
# Its Python is python.org's, under /usr/local, not marked externally managed (PEP 668): a root pip install is fine.
# install-check: python=3.11 glibc=2.36
FROM python:3.11-slim

WORKDIR /src
COPY sdk /src/sdk
COPY gateway /src/gateway
RUN pip install --no-cache-dir /src/sdk /src/gateway \
    && useradd --system --uid 10001 preftrack \
    && mkdir -p /var/lib/preftrack/snapshots && chown -R preftrack /var/lib/preftrack

USER preftrack
# The health port answers grpc.health.v1 from threads of its own, so the check below is answered while ingestion
# keeps the event loop busy (on the main port it could miss its deadline and a working gateway be marked unhealthy).
# Not 50052: the compose file publishes host ports 50051-50052 as the replicas' main ports. (Set to 0, the
# check asks the main port.)
ENV PREFTRACK_HEALTH_PORT=50060
EXPOSE 50051 9100 50060
# Every setting is a PREFTRACK_* variable (see the README); the pseudonym key comes from a secret file.
ENTRYPOINT ["preftrack-gateway"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 CMD \
    python -c "import grpc, os, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; \
port = os.environ.get('PREFTRACK_HEALTH_PORT', '0').lstrip('0') or os.environ.get('PREFTRACK_PORT', '50051'); \
c = grpc.insecure_channel('127.0.0.1:' + port); \
r = g.HealthStub(c).Check(h.HealthCheckRequest(service='preftrack.v1.FeedbackService'), timeout=2); \
sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"
