# pxe-pilot-builder: a Proxmox ISO in, boot assets out. No --privileged needed.
#   docker build -f Dockerfile.builder -t pxe-pilot-builder .
#   docker run --rm -v ./assets:/output pxe-pilot-builder --iso-url URL --answer-url URL
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md constraints.txt ./
COPY pxepilot pxepilot
COPY builder builder
COPY twisted twisted
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt .

FROM python:3.11.14-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels pxe-pilot && rm -rf /wheels
VOLUME ["/output"]
WORKDIR /output
ENTRYPOINT ["pxe-pilot-builder", "--output", "/output"]
