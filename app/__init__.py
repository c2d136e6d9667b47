"""The Celery application that celery-ecs deploys: tasks, web producer, beat, CLIs."""
