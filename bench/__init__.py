"""Benchmarks that print figures, not tests (``make bench``, ``make bench-plan``).

``worker_budget`` (the timeout budget against Celery's defaults), ``metrics_cost`` (what the queue
metrics cost a worker), ``scaling_sim`` (the scaling policies replayed), ``task_sizes`` (each
container's memory and CPU), ``broker_figures`` (what a task costs the broker: the plan's
ceiling reads them), ``liveness_timeouts`` (recovery, false restores under saturation and cost
for each liveness timeout, with ``cpu_task`` its CPU-spinning task), ``plan_timing`` (the
offline plan's time); ``defaults_app`` and ``redis_commands`` are their helpers.
"""
