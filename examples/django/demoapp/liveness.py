"""The liveness check the load balancer and the container health check ask.

A middleware ahead of all others: it answers before Django validates the Host header (the load
balancer's health checks carry the task's private address as their Host), and it touches
neither a database nor the broker, so an outage of either does not get the web tasks replaced.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

LIVENESS_PATH = "/healthz"


class LivenessMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == LIVENESS_PATH and request.method in ("GET", "HEAD"):
            return JsonResponse({"status": "ok"})
        return self.get_response(request)
