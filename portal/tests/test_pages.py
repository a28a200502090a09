from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_home_and_health(client):
    assert client.get("/").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}


def test_unknown_api_address_answers_json_404(client):
    response = client.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_unknown_page_answers_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and b"Page not found" in response.content
