# The image of compose.yaml: the monitor with the queue extra (Celery, Redis, PostgreSQL).
FROM python:3.12-slim
# Chromium for the blurred evidence screenshots (optional: without it, web archives only).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /home/monitor monitor \
    && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
       exposure-browser
WORKDIR /app
COPY pyproject.toml README.md run_monitor.py ./
COPY monitor ./monitor
RUN pip install --no-cache-dir '.[queue]'
COPY config/monitor.example.toml ./config/
USER monitor
ENTRYPOINT ["python", "run_monitor.py"]
CMD ["--help"]
