"""Settings of the Django example: the least Django needs, plus Koala's two settings."""

from __future__ import annotations

import os

SECRET_KEY = "example-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["koala_async.django.KoalaMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

KOALA = {  # KoalaSyncClient's keywords; the client is made on first use, in each process
    "public_api_key": os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
    "base_url": os.environ.get("KOALA_BASE_URL", "http://127.0.0.1:8787"),
    "user_agent": "acme-django-example/1.0",
    "flush_interval": float(os.environ.get("KOALA_FLUSH_INTERVAL", "1")),
}
KOALA_COOKIE = {"domain": os.environ.get("COOKIE_DOMAIN") or None}
