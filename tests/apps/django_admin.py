#!/usr/bin/env python3
"""A real Django admin behind which gaitkeeper's integration tests log in.

Single-file project (settings.configure, no startproject tree). Usage:

    PYTHONPATH=.test-deps/python python3 tests/apps/django_admin.py \
        --port PORT --dir DIR --user NAME --password PW [--user NAME2 --password PW2 ...]

Puts its SQLite database in DIR, runs `migrate` quietly, creates (or updates) each user as an
active superuser with that password, then serves Django's threaded development WSGI server
(the one `runserver` uses) on 127.0.0.1:PORT and prints one line `ready` once the socket listens.

Routes: /admin/ (django.contrib.admin, login at /admin/login/, CSRF protection on),
GET /whoami (text/plain username or `anonymous`), GET /headers (JSON with the request's
X-Forwarded-Proto and X-Forwarded-For, null when absent).
"""
import argparse
import os
import sys


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True, help="folder for the SQLite database")
    p.add_argument("--user", action="append", default=[], help="repeatable, paired with --password")
    p.add_argument("--password", action="append", default=[], help="repeatable, paired with --user")
    p.add_argument(
        "--csrf-trusted-origin",
        action="append",
        default=[],
        help="extra CSRF_TRUSTED_ORIGINS entry, e.g. https://127.0.0.1:8443 (repeatable)",
    )
    a = p.parse_args(argv)
    if len(a.user) != len(a.password):
        p.error("give one --password for each --user")
    return a


args = parse_args(sys.argv[1:])
os.makedirs(args.dir, exist_ok=True)

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="gaitkeeper-test-app-fixed-secret-key-not-for-production-0123456789",
    USE_TZ=True,
    TIME_ZONE="UTC",
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
    ],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [],
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(os.path.abspath(args.dir), "db.sqlite3"),
        }
    },
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    STATIC_URL="/static/",
    LOGIN_REDIRECT_URL="/admin/",
    CSRF_TRUSTED_ORIGINS=args.csrf_trusted_origin,
    # Django's default (PBKDF2, 1,000,000 rounds) takes 0.4 s a login on these machines; the
    # tests log in hundreds of times and test gaitkeeper, not password hashing.
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
)
django.setup()

from django.contrib import admin  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def whoami(request):
    name = request.user.get_username() if request.user.is_authenticated else "anonymous"
    return HttpResponse(name, content_type="text/plain; charset=utf-8")


def headers(request):
    return JsonResponse(
        {
            "proto": request.META.get("HTTP_X_FORWARDED_PROTO"),
            "for": request.META.get("HTTP_X_FORWARDED_FOR"),
        }
    )


urlpatterns = [
    path("admin/", admin.site.urls),
    path("whoami", whoami),
    path("headers", headers),
]


def main():
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    call_command("migrate", verbosity=0, interactive=False)
    User = get_user_model()
    for name, password in zip(args.user, args.password):
        user, _ = User.objects.get_or_create(username=name)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()

    httpd = ThreadedWSGIServer(("127.0.0.1", args.port), WSGIRequestHandler)
    httpd.daemon_threads = True
    httpd.set_app(get_wsgi_application())
    print("ready", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
