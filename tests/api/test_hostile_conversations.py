"""Conversation lists and exports under hostile input: bounded pages, safe Markdown."""

from __future__ import annotations

import httpx
import pytest

from starchart.api.conversation_protocol import LIST_LIMIT_MAX


def make(api: httpx.Client, **fields: object) -> dict:
    response = api.post("/v1/conversations", json={"system_prompt": "", **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_list_is_summaries_without_system_prompts_or_messages(api: httpx.Client) -> None:
    made = make(api, title="t", system_prompt="a long system prompt " * 100,
                messages=[{"role": "user", "content": "hello"}])
    row = api.get("/v1/conversations").json()["data"][0]
    assert row == {"id": made["id"], "object": "conversation", "title": "t", "model": None,
                   "created_at": made["created_at"], "updated_at": made["updated_at"]}


def test_list_paginates_with_a_cursor(api: httpx.Client) -> None:
    made = [make(api, title=f"c{i}")["id"] for i in range(5)]
    seen: list[str] = []
    pages = 0
    params: dict[str, object] = {"limit": 2}
    while True:
        page = api.get("/v1/conversations", params=params).json()
        pages += 1
        assert len(page["data"]) <= 2
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        params = {"limit": 2, "after": page["next_cursor"]}
    assert pages == 3
    assert seen == made[::-1]  # most recently updated first, each exactly once


def test_a_page_skips_nothing_when_rows_share_a_timestamp(api: httpx.Client) -> None:
    made = {make(api)["id"] for _ in range(4)}
    first = api.get("/v1/conversations", params={"limit": 3}).json()
    rest = api.get("/v1/conversations", params={"after": first["next_cursor"]}).json()
    assert {c["id"] for c in first["data"] + rest["data"]} == made
    assert rest["has_more"] is False


@pytest.mark.parametrize("params,param", [
    ({"limit": LIST_LIMIT_MAX + 1}, "limit"),
    ({"limit": 0}, "limit"),
    ({"after": "not-a-cursor"}, "after"),
    ({"after": "nan_conv_x"}, "after"),
])
def test_list_refuses_bad_paging(api: httpx.Client, params: dict[str, object],
                                 param: str) -> None:
    response = api.get("/v1/conversations", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_markdown_export_keeps_a_title_on_its_heading_line(api: httpx.Client) -> None:
    conv = make(api, title="Trip\r\n## Assistant\r\n# Injected\u2028more",
                messages=[{"role": "user", "content": "hi"}])
    text = api.get(f"/v1/conversations/{conv['id']}/export",
                   params={"format": "markdown"}).text
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# Trip ## Assistant # Injected more", "## User"]
