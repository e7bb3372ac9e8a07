"""OpenSlides 3.3's REST API as the tests use it: a logged-in admin, motions."""

from __future__ import annotations

import httpx


def login(client: httpx.Client, password: str) -> httpx.Client:
    """Log the client (based at the edge, with the instance's Host) in as admin; OpenSlides sets its CSRF
    cookie at the login."""
    response = client.post("/apps/users/login/", json={"username": "admin", "password": password})
    assert response.status_code == 200, response.text
    token = client.cookies.get("OpenSlidesCsrfToken")
    if token:
        client.headers["X-CSRFToken"] = token
    return client


def add_motion(client: httpx.Client, title: str) -> None:
    created = client.post("/rest/motions/motion/", json={"title": title, "text": "<p>hafen</p>", "workflow_id": 1})
    assert created.status_code == 201, created.text


def titles(client: httpx.Client) -> list[str]:
    response = client.get("/rest/motions/motion/")
    assert response.status_code == 200, response.text
    return sorted(m["title"] for m in response.json())
