# jwks-service: one replica. The configuration is not baked in: mount it at /etc/jwks-service/jwks.toml
# (docker-compose.yml mounts deploy/jwks.toml there) together with the KEK file it names.

# Build stage: a wheel of the package, built without the dev extras.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jwks_service/ jwks_service/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JWKS_CONFIG=/etc/jwks-service/jwks.toml
# JWKS_CONFIG: `docker compose exec jwks-1 jwks-service clients create ...` reads the same configuration as
# the server (without it the CLI would fall back to the embedded SQLite defaults inside the container).

# A fixed uid/gid: the KEK file is mode 0600 and must belong to this user (kek-init chowns it to 10001:10001).
RUN groupadd --system --gid 10001 jwks \
    && useradd --system --uid 10001 --gid jwks --create-home --home-dir /home/jwks --shell /usr/sbin/nologin jwks

COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels

USER jwks
WORKDIR /home/jwks
EXPOSE 8000

# Liveness only (/healthz): /readyz turns 503 while Redis is down, when a replica should keep serving from memory.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2); sys.exit(0 if r.status == 200 else 1)"]

CMD ["jwks-service", "serve", "--config", "/etc/jwks-service/jwks.toml", "--listen", "0.0.0.0:8000"]
