"""The Django example's WSGI app::

koala-async collector                                                      # terminal 1
gunicorn --preload -w 2 -b 127.0.0.1:8000 examples.django_app.wsgi:application
curl -c jar -b jar localhost:8000/
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
application = get_wsgi_application()
