"""Measurements of the worker's timeout budget against Celery's defaults (``make bench``)."""
