# The shim (HTTP functions under Granian), the trigger loop and the one-shot init, for docker compose.
# One image, three commands (see docker-compose.yml); the default command serves HTTP on port 80.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them: the run-time dependencies and
# the `serve` extra (Flask, Granian), read from pyproject.toml. The embedded servers of the `local`
# extra are not needed here: PostgreSQL, Redis and Kafka are containers of their own.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['serve']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY common/ common/
COPY functions/ functions/
COPY local/ local/
# The sample-data generator (docker compose exec shim ...)
COPY scripts/generate_data.py scripts/

RUN useradd --system --create-home --home-dir /home/iot --shell /usr/sbin/nologin iot
USER iot

EXPOSE 80
CMD ["python", "-m", "local.shim", "--host", "0.0.0.0", "--port", "80"]
