# pxe-pilot-builder: a Proxmox ISO in, boot assets out, as an unprivileged user.
# See docs/containers.md.
#   docker build -f Dockerfile.builder -t pxe-pilot-builder .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/assets:/output" pxe-pilot-builder \
#     --iso-url https://enterprise.proxmox.com/iso/proxmox-ve_9.1-1.iso \
#     --answer-url http://192.0.2.10:8080/answer

# Build stage: the same as Dockerfile.server's.
FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md constraints.txt ./
COPY pxepilot pxepilot
COPY builder builder
COPY twisted twisted
RUN pip wheel --no-cache-dir --disable-pip-version-check --only-binary=:all: \
        --constraint constraints.txt --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/pxe-pilot \
 && pip --python /opt/pxe-pilot/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels --constraint constraints.txt pxe-pilot \
 && find /opt/pxe-pilot -depth -type d \( -name test -o -name tests \) -exec rm -rf {} + \
 && /opt/pxe-pilot/bin/twistd pxe-pilot --help > /dev/null \
 && /opt/pxe-pilot/bin/pxe-pilot --help > /dev/null \
 && /opt/pxe-pilot/bin/pxe-pilot-builder --help > /dev/null

FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f
LABEL org.opencontainers.image.title="pxe-pilot-builder" \
      org.opencontainers.image.description="Turns a Proxmox ISO into the boot assets pxe-pilot serves" \
      org.opencontainers.image.licenses="MIT"
RUN python -m pip uninstall --yes --quiet --disable-pip-version-check pip setuptools wheel \
 && rm -f /usr/local/bin/pip \
 && groupadd --system --gid 10069 pxe-pilot \
 && useradd --system --uid 10069 --gid pxe-pilot --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin pxe-pilot \
 && mkdir -p /output \
 && chown pxe-pilot:pxe-pilot /output
COPY --from=build /opt/pxe-pilot /opt/pxe-pilot
ENV PATH=/opt/pxe-pilot/bin:$PATH \
    PYTHONUNBUFFERED=1
# Any user can run it (docker run --user UID:GID): it reads the ISO as a plain file and
# writes only under /output.
USER 10069:10069
WORKDIR /output
VOLUME ["/output"]
ENTRYPOINT ["pxe-pilot-builder", "--output", "/output"]
