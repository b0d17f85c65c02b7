"""gunicorn config for the multi-worker test: what the README tells users to write."""

from lifewatch.gunicorn import child_exit  # noqa: F401  (gunicorn finds hooks by name)

worker_class = "uvicorn_worker.UvicornWorker"
workers = 2
graceful_timeout = 5
