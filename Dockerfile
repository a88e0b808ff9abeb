# One image for every Michi service; the command picks the service (`michi run <service>`).
#   docker build -t michi .                                  # every service, the trainer too (torch)
#   docker build --target services -t michi-services .       # every service but the trainer: no torch
# The default (last) stage is the first plus the `training` extra, one layer on top: docker-compose.yml and
# deploy/kubernetes run `michi:latest` for all six services. Only the trainer needs torch, which brings several
# GB of CUDA libraries; a deployment that wants the others small builds `--target services` for them
# (docs/deploy.md). `michi run trainer` in that image stops with one line naming the extra.
# The vision models the camera service runs (docs/camera.md, *Deploying*): built on the build machine by
# `make models` and given as a named build context, checked against their lock by the service on first use:
#   docker build --build-context vision-models="${MICHI_VISION_MODELS_DIR:-$HOME/.cache/michi/vision/models}" .
# Without it this empty stage stands in: the image has no models and the camera service says so at start.
FROM scratch AS vision-models

FROM python:3.11-slim AS services
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY michi michi
COPY services services
# Real recordings: the trainer's real-data evaluation and `michi evaluate` read them (MICHI_DATASETS_DIR).
COPY datasets datasets
ENV MICHI_DATASETS_DIR=/app/datasets/real-driving
RUN pip install --no-cache-dir -c constraints.txt .
COPY --from=vision-models / /opt/michi/vision-models/
ENV MICHI_VISION_MODELS_DIR=/opt/michi/vision-models
USER nobody
ENTRYPOINT []
CMD ["michi", "--help"]

FROM services AS michi
USER root
RUN pip install --no-cache-dir -c constraints.txt '.[training]'
USER nobody
