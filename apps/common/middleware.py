"""A Content-Security-Policy on every response (``settings.CONTENT_SECURITY_POLICY``).

Scripts run only from this site's own files: the pages have no inline script, so markup that slipped into
a page through an item's text, label or metadata could not run even if the escaping that shows it as text
failed. Inline styles stay allowed (progress bars set their width; htmx and the admin add small styles).
Django 5.2 has no CSP of its own; a view that sets the header keeps its own.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.policy and HEADER not in response:
            response[HEADER] = self.policy
        return response
