"""Every client error gets the one JSON shape, the right status and a message naming the problem; never a 500."""

import shutil

import pytest

from tests.server.conftest import MODEL, add_variant

OK = {"model": "2l", "prompt": "ROMEO:"}


def error_of(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in r.text
    return body["error"]


@pytest.mark.parametrize(("body", "param", "code", "phrase"), [
    ({"model": "2l"}, "prompt", "missing_field", "missing required field `prompt`"),
    ({"prompt": "x"}, "model", "missing_field", "missing required field `model`"),
    ({**OK, "prompt": ""}, "prompt", "invalid_value", "length >= 1"),
    ({**OK, "max_tokens": "ten"}, "max_tokens", "invalid_value", "Expected `int"),
    ({**OK, "max_tokens": 0}, "max_tokens", "invalid_value", ">= 1"),
    ({**OK, "temperature": -0.5}, "temperature", "invalid_value", ">= 0"),
    ({**OK, "top_p": 1.5}, "top_p", "invalid_value", "<= 1"),
    ({**OK, "top_k": 0}, "top_k", "invalid_value", ">= 1"),
    ({**OK, "seed": -1}, "seed", "invalid_value", ">= 0"),
    ({**OK, "stop": ["a", ""]}, "stop[1]", "invalid_value", "length >= 1"),
    ({**OK, "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value", "length <= 4"),
    ({**OK, "logprob": 2}, "logprob", "unknown_field", "unknown field `logprob`"),
    ({**OK, "n": 3}, "n", "unsupported_value", "n=3 is not supported"),
    ({**OK, "max_tokens": 65}, "max_tokens", "max_tokens_too_large", "limit of 64"),
    ({**OK, "prompt": "x" * 101}, "prompt", "prompt_too_long", "at most 100"),
    ({**OK, "prompt": "naïve café ☃"}, "prompt", "unknown_characters", "'é', 'ï', '☃'"),
])
def test_bad_completion_requests_are_400_naming_the_field(client, body, param, code, phrase):
    e = error_of(client.post("/v1/completions", json=body), 400)
    assert (e["param"], e["code"], e["type"]) == (param, code, "invalid_request_error")
    assert phrase in e["message"], e["message"]


def test_body_that_is_not_json_is_400(client):
    e = error_of(client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"}),
                 400)
    assert "malformed" in e["message"]
    assert error_of(client.post("/v1/completions", json=["a list"]), 400)["code"] == "invalid_body"


def test_unknown_model_is_404_listing_the_models(client):
    e = error_of(client.post("/v1/completions", json={**OK, "model": "gpt-4"}), 404)
    assert e["code"] == "model_not_found" and e["param"] == "model"
    assert "'gpt-4'" in e["message"] and f"{MODEL} (2l)" in e["message"]
    assert error_of(client.get("/v1/models/7l"), 404)["code"] == "model_not_found"


def test_body_over_the_size_limit_is_413(client):
    e = error_of(client.post("/v1/completions", json={**OK, "prompt": "a" * 30_000}), 413)
    assert "20,000 bytes" in e["message"]


def test_unknown_route_and_method_use_the_same_shape(client):
    assert "no route GET /v2/nothing" in error_of(client.get("/v2/nothing"), 404)["message"]
    assert error_of(client.get("/v1/completions"), 405)["code"] == "method_not_allowed"


def test_model_that_failed_to_load_is_503_with_its_reason(make_client, exported_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    (add_variant(store, "shakespeare-char-3l", 3) / "model.onnx").write_bytes(b"not an onnx file")
    client = make_client(store)
    e = error_of(client.post("/v1/completions", json={**OK, "model": "3l"}), 503)
    assert e["code"] == "model_not_ready" and "shakespeare-char-3l is not ready:" in e["message"]
    assert "does not match its card" in e["message"]
    assert client.post("/v1/completions", json=OK).status_code == 200  # the healthy variant still serves


def test_an_alias_two_variants_have_names_the_older_one_never_400(make_client, exported_store, tmp_path):
    """(docs/api-decisions.md: names keep naming what they named; at start-up the oldest card has the alias.)"""
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    add_variant(store, "other-2l", 2, edit=lambda c: c["dataset"].update(name="other") or c["onnx"].update(
        exported_at="2099-01-01T00:00:00+00:00"))
    client = make_client(store)
    r = client.post("/v1/completions", json=OK)
    assert r.status_code == 200 and r.json()["model"] == MODEL, r.text
    assert client.post("/v1/completions", json={**OK, "model": "other-2l"}).status_code == 200


# -- issue 22, defect 9: a value of the wrong type is a 400, never coerced -------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("max_tpot_ms", "inf"), ("max_tokens", "5"), ("stream", "true"), ("speculative", "false"), ("speculative", 0),
    ("max_ttft_ms", "100"), ("temperature", "0"), ("seed", "3"), ("top_k", 2.0), ("echo", 0), ("logprobs", "0"),
    ("stream", 1), ("user", 5),
])
def test_a_value_of_the_wrong_type_is_400_naming_the_field(client, field, value):
    """Litestar converts a body leniently ("5" -> 5, "inf" -> infinity, 0 -> false): each of these used to be
    served (or refused for another reason)."""
    e = error_of(client.post("/v1/completions", json={**OK, "max_tokens": 3, field: value}), 400)
    assert (e["param"], e["code"]) == (field, "invalid_value"), e
    assert e["message"].startswith(f"invalid `{field}`: "), e


def test_a_value_of_the_wrong_type_inside_an_object_is_named_by_its_path(client):
    body = {**OK, "max_tokens": 3, "stream": True, "stream_options": {"include_usage": "true"}}
    e = error_of(client.post("/v1/completions", json=body), 400)
    assert (e["param"], e["code"]) == ("stream_options.include_usage", "invalid_value"), e


def test_values_of_the_right_type_are_still_served(client):
    """Strict, not pedantic: an integer where a float is expected is a number all the same."""
    body = {**OK, "max_tokens": 3, "temperature": 0, "max_tpot_ms": 10_000, "stream": False, "speculative": True,
            "stream_options": None, "echo": False}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3, r.text
