# One image for every Michi service; the command picks the service (`michi run <service>`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY michi michi
COPY services services
RUN pip install --no-cache-dir -c constraints.txt .
USER nobody
ENTRYPOINT []
CMD ["michi", "--help"]
