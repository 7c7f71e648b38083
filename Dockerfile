# syntax=docker/dockerfile:1
# mirrord's runtime image: the daemon as a non-root user, its state on a volume.
#
#   docker build -t mirrord .
#   docker run -d --name mirrord --stop-timeout 45 -p 127.0.0.1:9464:9464 \
#     -v /etc/mirrord:/etc/mirrord:ro -v mirrord-state:/var/lib/mirrord mirrord
#
# The config must listen on 0.0.0.0:9464 (`listen: 0.0.0.0:9464`) to be reachable through
# -p; the HEALTHCHECK asks /healthz on that port from inside the container. SIGTERM drains
# running copies for up to 30 s: give `docker stop` more than Docker's default 10 s
# (--stop-timeout 45, or `stop_grace_period: 45s` in compose). A one-shot sync instead:
#   docker run --rm --entrypoint mirrord -v ... mirrord sync --config /etc/mirrord/config.yaml

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment holding mirrord and its dependencies ---------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/mirrord
COPY pyproject.toml setup.py /src/
COPY mirrord /src/mirrord
COPY migrations /src/migrations
RUN /opt/mirrord/bin/pip install /src
# The installed package, not the source tree, must find its migrations: prove it here.
WORKDIR /tmp
RUN /opt/mirrord/bin/mirrord db upgrade --database sqlite:////tmp/check.db \
    && /opt/mirrord/bin/mirrord --version \
    && rm -f /tmp/check.db*

# ---- runtime -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 mirrord \
    && useradd --system --uid 10001 --gid mirrord --home-dir /var/lib/mirrord \
        --shell /usr/sbin/nologin mirrord \
    && install -d -o mirrord -g mirrord -m 0750 /var/lib/mirrord \
    && install -d -o root -g mirrord -m 0750 /etc/mirrord
COPY --from=build /opt/mirrord /opt/mirrord
ENV PATH=/opt/mirrord/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/var/lib/mirrord \
    MIRRORD_CONFIG=/etc/mirrord/config.yaml
USER mirrord
WORKDIR /var/lib/mirrord
VOLUME ["/var/lib/mirrord"]
EXPOSE 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
ENTRYPOINT ["mirrord", "run"]
CMD ["--config", "/etc/mirrord/config.yaml", "--drain", "30"]
