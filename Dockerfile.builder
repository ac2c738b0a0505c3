# pxe-pilot-builder: a Proxmox ISO in, boot assets out, as an unprivileged user.
# See docs/containers.md.
#   docker build -f Dockerfile.builder -t pxe-pilot-builder .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/assets:/output" pxe-pilot-builder \
#     --iso-url https://enterprise.proxmox.com/iso/proxmox-ve_9.1-1.iso \
#     --answer-url http://192.0.2.10:8080/answer

# The base: the official Python image, pinned by tag and digest. scripts/build-images
# --local-base passes a Debian 12 image made with mmdebstrap instead (python3, ipxe), for
# machines that reach Debian's mirrors and no image registry.
ARG BASE=python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

# Build stage: wheels for pxe-pilot and its locked dependencies, installed into a
# virtualenv that the final stage copies. Binary wheels only, so no compiler is needed.
FROM ${BASE} AS build
WORKDIR /src
# wheelhouse* matches nothing in a plain clone: then pip fetches from PyPI. When
# scripts/build-images has filled wheelhouse/ with the wheels of constraints.txt, they
# land in /src/wheels and the build reaches no package index.
COPY constraints.txt wheelhouse* wheels/
COPY setup.cfg pyproject.toml README.md constraints.txt ./
COPY pxepilot pxepilot
COPY builder builder
COPY twisted twisted
# pip runs from a virtualenv of its own, since Debian's python3 has none. Test packages
# of the dependencies are dropped (a third of the installed size). The --help runs
# import every command and write Twisted's plugin cache into the virtualenv, which the
# unprivileged user could not write at run time.
ENV PATH=/opt/pip/bin:$PATH
RUN if ls wheels/*.whl > /dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/wheels; fi \
 && python3 -m venv /opt/pip \
 && pip wheel --no-cache-dir --disable-pip-version-check --only-binary=:all: \
        --constraint constraints.txt --wheel-dir /wheels . \
 && python3 -m venv --without-pip /opt/pxe-pilot \
 && pip --python /opt/pxe-pilot/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels --constraint constraints.txt pxe-pilot \
 && find /opt/pxe-pilot -depth -type d \( -name test -o -name tests \) -exec rm -rf {} + \
 && /opt/pxe-pilot/bin/twistd pxe-pilot --help > /dev/null \
 && /opt/pxe-pilot/bin/pxe-pilot --help > /dev/null \
 && /opt/pxe-pilot/bin/pxe-pilot-builder --help > /dev/null

FROM ${BASE}
LABEL org.opencontainers.image.title="pxe-pilot-builder" \
      org.opencontainers.image.description="Turns a Proxmox ISO into the boot assets pxe-pilot serves" \
      org.opencontainers.image.licenses="MIT"
# The official image's own packaging tools go (Debian's python3 has none); pxe-pilot runs
# from its virtualenv.
RUN if python3 -m pip --version > /dev/null 2>&1; then \
        python3 -m pip uninstall --yes --quiet --disable-pip-version-check pip setuptools wheel; \
    fi \
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
