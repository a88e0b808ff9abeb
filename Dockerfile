# One image for every Michi service; the command picks the service (`michi run <service>`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY michi michi
COPY services services
# Real recordings: the trainer's real-data evaluation and `michi evaluate` read them (MICHI_DATASETS_DIR).
COPY datasets datasets
ENV MICHI_DATASETS_DIR=/app/datasets/real-driving
RUN pip install --no-cache-dir -c constraints.txt .
USER nobody
ENTRYPOINT []
CMD ["michi", "--help"]
