# simapp web and worker image. Build: docker build -t simapp .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SIMAPP_DATA_DIR=/data
WORKDIR /app

RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/*

COPY requirements.txt pyproject.toml ./
# torch==2.13.0 from PyPI is the CUDA build on Linux: the same image serves CPU web nodes and GPU workers.
RUN pip install -r requirements.txt

COPY . .
RUN DJANGO_DEBUG=0 DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 simapp && mkdir -p /data && chown simapp /data
USER simapp
VOLUME ["/data"]
EXPOSE 8000

CMD ["gunicorn", "simapp.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "120"]
