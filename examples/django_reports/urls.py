"""The example's routes."""

from django.urls import path

from . import views

urlpatterns = [
    path("fib/", views.fib),
    path("jobs/<str:job_id>/", views.job),
]
