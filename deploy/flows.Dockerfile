# The flows image for a Kubernetes (or Docker) work pool: the project and its locked dependencies.
#   docker build -f deploy/flows.Dockerfile -t <registry>/mlops-flows:<tag> .
# Deployments applied from inside this image load their flows from /opt/mlops (prefect deploy's default
# pull step is the directory it runs in): see the README, "Scale out".
FROM python:3.11-slim
ENV UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /opt/mlops
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY models ./models
COPY flows ./flows
COPY serving ./serving
COPY prefect.yaml ./
RUN uv sync --frozen --no-dev
