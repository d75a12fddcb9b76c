# syntax=docker/dockerfile:1
# operatord image: `docker build -t operatord .` from the repository root.
# The build stage installs operatord and its dependencies into a virtualenv; the final stage is a
# slim Python with only that virtualenv, the example handler and config, and a non-root user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/operatord
WORKDIR /src
# The dependencies first, from setup.cfg alone, so that this layer is reused until they change.
COPY setup.cfg ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); \
print(c['options']['install_requires'])" > /tmp/requirements.txt \
    && /opt/operatord/bin/pip install --requirement /tmp/requirements.txt
# .dockerignore limits the context to the package, its metadata, examples/ and config/.
COPY . .
# setuptools only bootstraps the virtualenv: nothing at run time imports it, and a derived image's
# `pip install` builds in an isolated environment of its own.
RUN /opt/operatord/bin/pip install --no-deps . \
    && /opt/operatord/bin/pip check \
    && /opt/operatord/bin/pip uninstall --yes --quiet setuptools \
    && /opt/operatord/bin/python -m compileall -q /opt/operatord/lib

FROM ${PYTHON_IMAGE}
# A fixed numeric uid/gid so Kubernetes can verify runAsNonRoot; the chart runs as the same ids.
RUN groupadd --system --gid 65532 operatord \
    && useradd --system --uid 65532 --gid 65532 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin operatord
COPY --from=build /opt/operatord /opt/operatord
# The example handler and config, so the chart's default values run as they are.
COPY --chown=root:root examples /app/examples
COPY --chown=root:root config /app/config
ENV PATH=/opt/operatord/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["operatord"]
# The chart mounts its ConfigMap at /etc/operatord.
CMD ["run", "--config", "/etc/operatord/config.yaml"]
# The labels last: their per-build values leave the layers above cacheable.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG PYTHON_IMAGE
LABEL org.opencontainers.image.title="operatord" \
      org.opencontainers.image.description="Multi-process, sharded daemon for Kubernetes operators written in Python" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/operatord/operatord" \
      org.opencontainers.image.documentation="https://github.com/operatord/operatord/blob/main/docs/deploy.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
