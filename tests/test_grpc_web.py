"""gRPC-Web on the gRPC port: HTTP/1.1 calls as a browser makes them, CORS limited to the
configured origins, and authentication unchanged."""

from __future__ import annotations

import base64
import gzip
import http.client
import socket
import json
import struct
import urllib.parse
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from conftest import RunningServer, start_server
from helpers import f32, manifest, node, samples
from remotemedia_client import pb
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc

ORIGIN = "http://localhost:8123"
TOKEN = "web-token-5d2e"
SERVICE = "/remotemedia.v1.PipelineService"


@pytest.fixture(scope="module")
def web() -> Iterator[RunningServer]:
    s = start_server("--cors-allowed-origins", f"{ORIGIN},https://app.example.com", "--auth-tokens", TOKEN)
    yield s
    assert s.stop() == 0


def frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def unframe(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Splits a gRPC-Web response body into its messages and its trailer frame."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    while body:
        flag, length = body[0], struct.unpack(">I", body[1:5])[0]
        payload, body = body[5 : 5 + length], body[5 + length :]
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    k, _, v = line.partition(":")
                    trailers[k.strip().lower()] = v.strip()
        else:
            messages.append(payload)
    return messages, trailers


def call(s: RunningServer, method: str, message: bytes, headers: dict[str, str], copies: int = 1) -> tuple[http.client.HTTPResponse, bytes]:
    host, port = s.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(
        "POST",
        f"{SERVICE}/{method}",
        body=frame(message) * copies,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "origin": ORIGIN, **headers},
    )
    response = conn.getresponse()
    return response, response.read()


def status_of(response: http.client.HTTPResponse, trailers: dict[str, str]) -> str | None:
    # A trailers-only answer carries grpc-status in the HTTP headers.
    return trailers.get("grpc-status") or response.getheader("grpc-status")


def test_get_version_over_grpc_web_from_an_allowed_origin(web: RunningServer) -> None:
    response, body = call(web, "GetVersion", pb.VersionRequest(client_version="v1").SerializeToString(), {})
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("application/grpc-web")
    assert response.getheader("access-control-allow-origin") == ORIGIN
    messages, trailers = unframe(body)
    assert status_of(response, trailers) == "0"
    version = pb.VersionResponse.FromString(messages[0])
    assert version.compatible and "v1" in version.version_info.supported_protocols
    assert "GainNode" in version.version_info.supported_node_types


def test_execute_over_grpc_web_needs_the_token_and_runs_the_pipeline(web: RunningServer) -> None:
    request = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode", gain_db=-6.0)]), audio_inputs={"g": f32(np.full(8, 0.5))})

    response, body = call(web, "ExecutePipeline", request.SerializeToString(), {})
    messages, trailers = unframe(body)
    assert status_of(response, trailers) == "16", (response.headers, trailers)
    assert not messages

    response, body = call(web, "ExecutePipeline", request.SerializeToString(), {"authorization": f"Bearer {TOKEN}"})
    messages, trailers = unframe(body)
    assert status_of(response, trailers) == "0", trailers
    result = pb.ExecuteResponse.FromString(messages[0]).result
    np.testing.assert_allclose(samples(result.audio_outputs["g"]), 0.5 * 10 ** (-6 / 20), rtol=1e-5)


def test_a_unary_call_carrying_two_request_messages_is_refused(web: RunningServer) -> None:
    request = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(8))})
    response, body = call(web, "ExecutePipeline", request.SerializeToString(), {"authorization": f"Bearer {TOKEN}"}, copies=2)
    messages, trailers = unframe(body)
    assert status_of(response, trailers) == "3", (response.headers, trailers)
    assert not messages
    message = urllib.parse.unquote(trailers.get("grpc-message") or response.getheader("grpc-message") or "")
    assert "carried 2 request messages; a unary call takes exactly one" in message, message


def test_a_call_in_another_codec_than_protobuf_is_told_which_it_sends(web: RunningServer) -> None:
    # connect-web's gRPC-Web transport sends application/grpc-web+json with `useBinaryFormat: false`.
    for content_type in ("application/grpc-web+json", "application/grpc-web-text+json"):
        for method in ("GetVersion", "ExecutePipeline"):
            response, body = call(web, method, b"{}", {"content-type": content_type, "authorization": f"Bearer {TOKEN}"})
            assert response.status == 200, (content_type, response.status)
            messages, trailers = unframe(body)
            assert status_of(response, trailers) == "12", (content_type, response.headers, trailers)
            assert not messages
            message = urllib.parse.unquote(trailers.get("grpc-message") or response.getheader("grpc-message") or "")
            remedy = "send protobuf messages (connect-web: useBinaryFormat: true): messages encoded as `json` are not supported"
            assert message.startswith(remedy) and f"content-type is `{content_type}`" in message, message
            details = status_pb2.Status.FromString(base64.b64decode(pad(response.getheader("grpc-status-details-bin") or "")))
            info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
            assert details.details[0].Unpack(info) and info.reason == "VALIDATION", details
            assert details.details[1].Unpack(bad) and bad.field_violations[0].field == "content-type", details
            assert bad.field_violations[0].description.startswith(remedy), "the remedy survives the description's cut"


def test_a_grpc_web_media_type_is_read_in_any_letter_case_and_with_parameters(web: RunningServer) -> None:
    # Media types are case-insensitive (RFC 9110 §8.3.1).
    for content_type in ("Application/Grpc-Web+Proto", "APPLICATION/GRPC-WEB", "application/grpc-web+proto; charset=utf-8"):
        response, body = call(web, "GetVersion", b"", {"content-type": content_type})
        messages, trailers = unframe(body)
        assert status_of(response, trailers) == "0", (content_type, response.status, response.headers)
        assert pb.VersionResponse.FromString(messages[0]).version_info.supported_protocols, content_type


def test_a_text_request_is_answered_in_text_whatever_the_spelling_of_its_accept(web: RunningServer) -> None:
    # Google's grpc-web library asks with `accept: application/grpc-web-text`; another spelling,
    # `*/*` or none leaves the answer's format open, and a text request gets text back.
    host, port = web.address.rsplit(":", 1)
    for accept in ("Application/Grpc-Web-Text", "*/*", None):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"content-type": "APPLICATION/GRPC-WEB-TEXT", "x-grpc-web": "1", "origin": ORIGIN}
        if accept is not None:
            headers["accept"] = accept
        conn.request("POST", f"{SERVICE}/GetVersion", body=base64.b64encode(frame(b"")), headers=headers)
        response = conn.getresponse()
        assert response.getheader("content-type", "").startswith("application/grpc-web-text"), (accept, response.headers)
        messages, trailers = unframe(text_body(response.read()))
        assert status_of(response, trailers) == "0" and pb.VersionResponse.FromString(messages[0]).version_info.protocol_version


def test_health_follows_the_same_wire_rules_as_the_pipeline_service(web: RunningServer) -> None:
    health = health_pb2.HealthCheckRequest(service="").SerializeToString()
    host, port = web.address.rsplit(":", 1)
    for content_type, want in (("Application/Grpc-Web+Proto", "0"), ("text/plain", "12"), ("application/grpc", "12")):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/grpc.health.v1.Health/Check", body=frame(health), headers={"content-type": content_type})
        response = conn.getresponse()
        messages, trailers = unframe(response.read())
        assert status_of(response, trailers) == want, (content_type, response.status, response.headers)
        if want == "0":
            assert health_pb2.HealthCheckResponse.FromString(messages[0]).status == health_pb2.HealthCheckResponse.SERVING
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/grpc.health.v1.Health/Check", body=b"{}", headers={"content-type": "application/json"})
    assert conn.getresponse().status == 501, "a Connect call gets the Connect error"


def test_health_takes_gzip_requests_as_the_pipeline_service_does(web: RunningServer) -> None:
    # The refusal of another compression tells a client to use gzip: every service takes it.
    with grpc.insecure_channel(web.address, compression=grpc.Compression.Gzip) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        assert check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == health_pb2.HealthCheckResponse.SERVING


def test_a_call_whose_media_type_is_not_grpc_is_told_so_not_answered_with_a_bare_400(web: RunningServer) -> None:
    for content_type in ("text/plain", "application/grpcx+json"):
        response, body = call(web, "GetVersion", b"", {"content-type": content_type})
        assert response.status == 200, (content_type, response.status)
        assert status_of(response, unframe(body)[1]) == "12", content_type
        message = urllib.parse.unquote(response.getheader("grpc-message") or "")
        assert message.startswith("send gRPC calls (content-type application/grpc"), message
        assert f"`{content_type}` is not a gRPC media type" in message, message
        assert response.getheader("access-control-allow-origin") == ORIGIN, "a page can read it"
    # A POST with no content-type at all is named too.
    host, port = web.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", f"{SERVICE}/GetVersion", skip_accept_encoding=True)
    conn.putheader("content-length", "5")
    conn.endheaders(frame(b""))
    response = conn.getresponse()
    assert status_of(response, unframe(response.read())[1]) == "12"
    assert urllib.parse.unquote(response.getheader("grpc-message") or "").endswith("the call has none")
    # Native gRPC, and gRPC in another codec, over HTTP/1.1: named too.
    for content_type, named in (
        ("application/grpc", "send gRPC calls over HTTP/2, or gRPC-Web (application/grpc-web+proto) over HTTP/1.1"),
        ("application/grpc+json", "send protobuf messages (connect-web: useBinaryFormat: true)"),
    ):
        response, body = call(web, "GetVersion", b"", {"content-type": content_type})
        assert status_of(response, unframe(body)[1]) == "12", content_type
        assert urllib.parse.unquote(response.getheader("grpc-message") or "").startswith(named), content_type


def test_a_compression_is_read_in_any_letter_case_and_a_refused_one_lists_those_taken(web: RunningServer) -> None:
    request = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.full(8, 0.5))})
    auth = {"authorization": f"Bearer {TOKEN}"}
    gzipped = gzip.compress(request.SerializeToString())
    host, port = web.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "origin": ORIGIN, "grpc-encoding": "GZIP", **auth}
    conn.request("POST", f"{SERVICE}/ExecutePipeline", body=b"\x01" + struct.pack(">I", len(gzipped)) + gzipped, headers=headers)
    response = conn.getresponse()
    messages, trailers = unframe(response.read())
    assert status_of(response, trailers) == "0", (response.headers, trailers)
    assert pb.ExecuteResponse.FromString(messages[0]).WhichOneof("outcome") == "result"
    # A page can read which compressions the server takes when it refuses one.
    response, body = call(web, "ExecutePipeline", request.SerializeToString(), {"grpc-encoding": "deflate", **auth})
    assert status_of(response, unframe(body)[1]) == "12"
    assert response.getheader("grpc-accept-encoding") == "gzip,identity"
    assert "grpc-accept-encoding" in (response.getheader("access-control-expose-headers") or "").split(",")


def test_a_call_made_with_the_connect_protocol_gets_a_connect_error_naming_the_transports(web: RunningServer) -> None:
    before = web.metric("remotemedia_requests_total", rpc="GetVersion", code="UNIMPLEMENTED", outcome="validation")
    for headers in ({"content-type": "application/json"}, {"content-type": "application/proto", "connect-protocol-version": "1"}):
        host, port = web.address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", f"{SERVICE}/GetVersion", body=b"{}", headers={"origin": ORIGIN, **headers})
        response = conn.getresponse()
        assert response.status == 501, response.status
        assert response.getheader("access-control-allow-origin") == ORIGIN, "a page can read it"
        error = json.loads(response.read())
        assert len(response.getheader("x-request-id") or "") == 32, "the call's id, as on every answer"
        assert error["code"] == "unimplemented"
        assert "not the Connect protocol" in error["message"] and "createGrpcWebTransport" in error["message"]
    assert web.metric("remotemedia_requests_total", rpc="GetVersion", code="UNIMPLEMENTED", outcome="validation") == before + 2
    # A browser's Connect client sends its version header: the preflight lets it through, so the
    # page reads the answer instead of a failed fetch.
    host, port = web.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    asked = "connect-protocol-version,connect-timeout-ms,content-type"
    conn.request(
        "OPTIONS",
        f"{SERVICE}/GetVersion",
        headers={"origin": ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": asked},
    )
    response = conn.getresponse()
    response.read()
    allowed = (response.getheader("access-control-allow-headers") or "").split(",")
    assert set(asked.split(",")) <= set(allowed), allowed


def pad(b64: str) -> str:
    return b64 + "=" * (-len(b64) % 4)


def text_body(answer: bytes) -> bytes:
    """A grpc-web-text response: each frame is base64 on its own, padding included."""
    chunks = [c + b"=" * (-len(c) % 4) for c in answer.replace(b"=", b" ").split()]
    return b"".join(base64.b64decode(c) for c in chunks)


def test_grpc_web_text_runs_and_a_body_that_is_not_base64_is_invalid_argument(web: RunningServer) -> None:
    # application/grpc-web-text (the default of Google's grpc-web library) carries the frames in
    # base64. A body that is not base64 was sent whole: it is malformed, not a reset call.
    request = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(8))})
    host, port = web.address.rsplit(":", 1)
    for body, want in [(base64.b64encode(frame(request.SerializeToString())), "0"), (b"!!not base64!!", "3")]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {
            "content-type": "application/grpc-web-text",
            "accept": "application/grpc-web-text",
            "x-grpc-web": "1",
            "origin": ORIGIN,
            "authorization": f"Bearer {TOKEN}",
        }
        conn.request("POST", f"{SERVICE}/ExecutePipeline", body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        _, trailers = unframe(text_body(answer))
        assert status_of(response, trailers) == want, (response.headers, trailers)
        if want == "3":
            message = urllib.parse.unquote(trailers.get("grpc-message") or response.getheader("grpc-message") or "")
            assert "not valid gRPC-Web text" in message, message


def test_a_binary_upload_cut_short_is_not_blamed_on_base64(web: RunningServer) -> None:
    # Binary gRPC-Web whose body ends (the client half-closes) before its declared length: the
    # message says the request ended early, not that it is malformed gRPC-Web text.
    host, port = web.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        head = f"POST {SERVICE}/GetVersion HTTP/1.1\r\nHost: x\r\ncontent-type: application/grpc-web\r\norigin: {ORIGIN}\r\n"
        conn.sendall(head.encode() + b"content-length: 100\r\n\r\n" + b"\x00" * 5)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    text = urllib.parse.unquote(answer.decode("latin1"))
    assert "grpc-status: 1" in text, text
    assert "the request ended before its message arrived whole" in text and "gRPC-Web text" not in text, text


def test_a_request_refused_while_it_is_still_being_sent_gets_its_status() -> None:
    """HTTP/1.1 cannot stop an upload: the server reads the rest of a refused request while it
    answers, so a client that sends its whole body before reading (as http.client and browsers
    do) gets the refusal instead of a broken pipe."""
    s = start_server("--max-message-bytes", "262144", "--auth-tokens", TOKEN, "--cors-allowed-origins", ORIGIN)
    try:
        request = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(1_000_000))})
        too_large = request.SerializeToString()  # 4 MB, 16 × the cap
        response, body = call(s, "ExecutePipeline", too_large, {"authorization": f"Bearer {TOKEN}"})
        assert status_of(response, unframe(body)[1]) == "8", response.headers
        assert "max_message_bytes" in (response.getheader("grpc-message") or "")
        response, body = call(s, "ExecutePipeline", too_large, {})
        assert status_of(response, unframe(body)[1]) == "16", response.headers
    finally:
        assert s.stop() == 0


def preflight(s: RunningServer, origin: str) -> http.client.HTTPResponse:
    host, port = s.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(
        "OPTIONS",
        f"{SERVICE}/ExecutePipeline",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web,remotemedia-protocol-version",
        },
    )
    response = conn.getresponse()
    response.read()
    return response


def test_cors_preflight_allows_only_the_configured_origins(web: RunningServer) -> None:
    allowed = preflight(web, "https://app.example.com")
    assert allowed.getheader("access-control-allow-origin") == "https://app.example.com"
    allow_headers = (allowed.getheader("access-control-allow-headers") or "").lower()
    for h in ("authorization", "content-type", "x-grpc-web", "remotemedia-protocol-version"):
        assert h in allow_headers
    assert "POST" in (allowed.getheader("access-control-allow-methods") or "")

    refused = preflight(web, "https://evil.example.net")
    assert refused.getheader("access-control-allow-origin") is None


def test_a_call_from_an_origin_outside_the_list_is_refused_before_it_runs(web: RunningServer) -> None:
    # CORS keeps the answer from the page, but the call would run: it is refused first, with
    # PERMISSION_DENIED, and counted. A call without Origin (not from a browser) runs.
    request = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(8))})
    auth = {"authorization": f"Bearer {TOKEN}"}
    before = web.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="PERMISSION_DENIED", outcome="authentication")
    response, body = call(web, "ExecutePipeline", request.SerializeToString(), {**auth, "origin": "https://evil.example.net"})
    messages, trailers = unframe(body)
    assert status_of(response, trailers) == "7", (response.headers, trailers)
    assert not messages
    message = urllib.parse.unquote(trailers.get("grpc-message") or response.getheader("grpc-message") or "")
    assert "this origin is not allowed (cors_allowed_origins)" in message
    after = web.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="PERMISSION_DENIED", outcome="authentication")
    assert after == before + 1
    host, port = web.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **auth}
    conn.request("POST", f"{SERVICE}/ExecutePipeline", body=frame(request.SerializeToString()), headers=headers)
    plain = conn.getresponse()
    assert status_of(plain, unframe(plain.read())[1]) == "0"


def test_without_configured_origins_no_origin_is_allowed(server: RunningServer) -> None:
    assert preflight(server, ORIGIN).getheader("access-control-allow-origin") is None
    # Same-origin and non-browser callers still reach the service over gRPC-Web.
    response, body = call(server, "GetVersion", pb.VersionRequest().SerializeToString(), {})
    messages, trailers = unframe(body)
    assert status_of(response, trailers) == "0"
    assert response.getheader("access-control-allow-origin") is None
    assert pb.VersionResponse.FromString(messages[0]).compatible


def test_a_bad_origin_setting_stops_start_up() -> None:
    with pytest.raises(AssertionError, match="is not an origin"):
        start_server("--cors-allowed-origins", "*")


def test_every_json_log_line_has_a_message_even_at_debug_level() -> None:
    # Libraries on the gRPC-Web path (tonic-web among them) emit bare structured events at
    # debug level; the contract's log lines all carry timestamp, level and message.
    s = start_server("--cors-allowed-origins", ORIGIN, "--log-level", "debug", "--log-format", "json")
    try:
        response, _ = call(s, "GetVersion", pb.VersionRequest(client_version="v1").SerializeToString(), {})
        assert response.status == 200
        # A plain gRPC call passes the gRPC-Web layer too (which logs it as "other h2").
        with grpc.insecure_channel(s.address) as channel:
            service_pb2_grpc.PipelineServiceStub(channel).GetVersion(pb.VersionRequest(), timeout=10)
    finally:
        assert s.stop() == 0
    records = [json.loads(line) for line in s.lines]
    assert any(r.get("level") == "DEBUG" for r in records), "debug logging is on"
    missing = [r for r in records if not {"timestamp", "level", "message"} <= r.keys()]
    assert missing == [], missing[:3]
