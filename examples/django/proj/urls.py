from demoapp import views
from django.urls import path

urlpatterns = [
    path("welcome-emails", views.enqueue_welcome_email),
]
