"""A versioned model repository of tiny branches, served live, with an admin token:
what the hot-update and user-task tests share."""

from __future__ import annotations

import httpx

from service.client import Client

ADMIN_TOKEN = "s3cret-token-for-the-live-update-tests"
# One request per preset task, answered before and after an update to compare.
PROBES = {
    "sentiment": {"text": "a quiet and moving film"},
    "paraphrase": {"sentence1": "how do I cook rice", "sentence2": "what is the way to cook rice"},
    "similarity": {"sentence1": "a man plays guitar", "sentence2": "a man is playing music"},
}


def probe(client: Client) -> dict[str, dict]:
    return {task: client._http.post(f"/{task}", json=body).json() for task, body in PROBES.items()}


def reload(client: Client, token: str = ADMIN_TOKEN) -> httpx.Response:
    return client._http.post("/admin/reload", headers={"Authorization": f"Bearer {token}"})
