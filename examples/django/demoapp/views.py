import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from demoapp.tasks import send_welcome_email


@csrf_exempt  # a JSON API for other programs, not a form: no CSRF token to send
@require_POST
def enqueue_welcome_email(request: HttpRequest) -> JsonResponse:
    # Demo endpoint without authentication: your app puts its own in front (see README.md).
    try:
        user_id = json.loads(request.body).get("user_id")
    except (ValueError, AttributeError):
        user_id = None
    if not isinstance(user_id, int):
        return JsonResponse({"error": 'expected a JSON body {"user_id": <integer>}'}, status=400)
    result = send_welcome_email.delay(user_id)
    return JsonResponse({"task_id": result.id}, status=202)
