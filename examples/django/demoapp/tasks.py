import logging
import time

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task
def send_welcome_email(user_id: int) -> None:
    # Stands in for rendering the message and the mail service's API call: it takes a moment,
    # as that call does.
    time.sleep(0.3)
    log.info("sent the welcome email to user %s", user_id)


@shared_task
def clear_expired_invitations() -> None:
    # The project's periodic job (the stack file's schedule); here, it only says it ran.
    log.info("expired invitations cleared")
