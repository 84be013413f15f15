"""The CLI follows redirects only to the cluster's own members, and never carries its
token anywhere else."""

from __future__ import annotations

import pytest

from hacontrol.cli.client import Client, ClientError, RetryPolicy

from .cli_fake import FakeApi


def members(*apis: str) -> dict[str, object]:
    return {"members": [{"id": f"c{i}", "raft": f"h:{i}", "api": a}
                        for i, a in enumerate(apis, 1)]}


def client(api: FakeApi) -> Client:
    return Client([api.url], token="sekrit", retry=RetryPolicy(attempts=1),
                  transport=api.transport)


def test_a_redirect_to_a_foreign_host_is_not_followed_and_the_token_not_sent() -> None:
    api = FakeApi(urls=["http://10.9.0.1:8101", "http://10.9.0.2:8101",
                        "http://evil.example:8101"])
    api.reply("GET", "/v1/status", members("http://10.9.0.1:8101", "http://10.9.0.2:8101"))
    api.replies += [(307, {}, {"Location": "http://evil.example:8101/v1/jobs"})]
    with pytest.raises(ClientError) as info:
        client(api).get("/v1/jobs")
    assert info.value.code == "redirect_refused"
    assert "evil.example" in str(info.value)
    assert all(s.addr != "http://evil.example:8101" for s in api.seen)
    assert [s.path for s in api.seen] == ["/v1/jobs", "/v1/status"]


def test_a_redirect_to_another_port_of_a_member_host_is_not_followed() -> None:
    api = FakeApi(urls=["http://10.9.0.1:8101", "http://10.9.0.1:9999"])
    api.reply("GET", "/v1/status", members("http://10.9.0.1:8101"))
    api.replies += [(307, {}, {"Location": "http://10.9.0.1:9999/v1/jobs"})]
    with pytest.raises(ClientError):
        client(api).get("/v1/jobs")
    assert all(s.addr != "http://10.9.0.1:9999" for s in api.seen)


def test_a_redirect_to_a_member_listed_in_status_is_followed_with_the_token() -> None:
    api = FakeApi()
    api.reply("GET", "/v1/status", members(*api.urls))
    api.replies += [(307, {}, {"Location": api.urls[1] + "/v1/jobs"}),
                    (200, {"jobs": []}, {})]
    assert client(api).get("/v1/jobs") == {"jobs": []}
    assert api.last.addr == api.urls[1]
    assert api.last.headers["Authorization"] == "Bearer sekrit"


def test_an_unanswered_status_means_no_member_is_trusted() -> None:
    api = FakeApi(urls=["http://10.9.0.1:8101", "http://10.9.0.2:8101"])
    api.reply("GET", "/v1/status", {}, status=503)
    api.replies += [(307, {}, {"Location": api.urls[1] + "/v1/jobs"})]
    with pytest.raises(ClientError):
        client(api).get("/v1/jobs")
    assert all(s.addr != api.urls[1] for s in api.seen)
