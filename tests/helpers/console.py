"""Logging in to the console through Flask's test client, with the form's CSRF token."""

from __future__ import annotations

import re
from typing import Any


def log_in(client: Any, token: str, who: str = "", next_page: str = "", **headers: str) -> Any:
    token_csrf = csrf(client.get("/ui/login", headers=headers).text)
    return client.post("/ui/login", data={"csrf": token_csrf, "token": token, "who": who, "next": next_page},
                       headers=headers)


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)
