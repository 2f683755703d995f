"""The Django example's views: a page view, and a signup that identifies and tracks."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from koala_async import ValidationError
from koala_async.django import get_koala


def home(request: HttpRequest) -> JsonResponse:
    profile_id: str = request.koala_profile_id  # type: ignore[attr-defined]
    get_koala().page(profile_id=profile_id, name="Home")
    return JsonResponse({"profile_id": profile_id})


@csrf_exempt
def signup(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    profile_id: str = request.koala_profile_id  # type: ignore[attr-defined]
    koala = get_koala()
    try:
        koala.identify(profile_id=profile_id, email=data.get("email"), traits={"plan": "pro"})
        message_id = koala.track("Signed Up", profile_id=profile_id, email=data.get("email"))
    except ValidationError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"profile_id": profile_id, "message_id": message_id})


urlpatterns = [path("", home), path("signup", signup)]
