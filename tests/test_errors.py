"""Every error under /v1, unknown routes and wrong methods included, in one JSON shape."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.support import ADMIN, READER, create_integration


def test_unknown_routes_and_wrong_methods_answer_the_json_error_shape(client: TestClient) -> None:
    iid, _ = create_integration(client)
    unknown = client.get("/v1/integrations/x/nothing-here", headers=READER)
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": "no such endpoint: GET /v1/integrations/x/nothing-here",
        "reason": "not_found",
    }
    wrong = client.delete(f"/v1/integrations/{iid}/contacts", headers=ADMIN)
    assert wrong.status_code == 405
    assert wrong.json()["reason"] == "method_not_allowed"
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert client.put("/v1/freshchat/events").json()["reason"] == "method_not_allowed"
    outside = client.get("/no-such-page")
    assert outside.status_code == 404 and outside.headers["content-type"].startswith("text/plain")
