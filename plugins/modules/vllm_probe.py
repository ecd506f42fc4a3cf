#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_probe
short_description: Probe a vLLM (OpenAI-compatible) server, /health and a smoke chat completion with a known answer
version_added: 0.1.0
description:
  - Asks C(GET /health) of the server at O(url), optionally again and again until it answers 200 or O(wait_timeout) runs out
    (a model load takes minutes).
  - With O(smoke=true), then sends one C(POST /v1/chat/completions) with O(question), whose answer is known, and checks
    that the answer contains O(expected) (case-insensitive). This catches a server that is up but answers garbage,
    as it does when an attention kernel is broken.
  - Reports the smoke request's latency in milliseconds.
  - It never fails because of the server; it reports what it saw (RV(healthy), RV(smoke), RV(passed), RV(msg)) and the
    caller decides, so that a read-only report can cover unhealthy hosts. It fails only on bad options.
  - Read-only. Supports check mode and never reports changed.
options:
  url:
    description: Base URL of the server, without a path, for example V(http://127.0.0.1:8000).
    type: str
    required: true
  api_key:
    description: "API key sent as C(Authorization: Bearer ...) on the C(/v1) request. Never logged."
    type: str
  wait_timeout:
    description: Seconds to keep asking C(/health) until it answers 200. V(0) asks once.
    type: int
    default: 0
  wait_interval:
    description: Seconds between two C(/health) requests while waiting.
    type: float
    default: 2.0
  systemd_unit:
    description:
      - The systemd unit that runs the server. While waiting, the module also reads its state and stops waiting early
        when the unit is C(failed) or C(inactive), or when it has restarted more than O(allowed_restarts) times since the
        wait began (the server crashed while loading), instead of waiting for O(wait_timeout) to run out.
    type: str
  allowed_restarts:
    description: Restarts of O(systemd_unit) tolerated while waiting.
    type: int
    default: 0
  smoke:
    description: Whether to send the smoke chat completion once C(/health) answers 200.
    type: bool
    default: false
  model:
    description: Model name for the smoke request (the served model name). Required with O(smoke=true).
    type: str
  question:
    description: The smoke question.
    type: str
    default: What is the capital of France? Answer with one word.
  expected:
    description: Text that the answer must contain (case-insensitive).
    type: str
    default: Paris
  max_tokens:
    description: C(max_tokens) of the smoke request.
    type: int
    default: 64
  extra_body:
    description:
      - "Extra fields merged into the smoke request body, for example
        V({\"chat_template_kwargs\": {\"enable_thinking\": false}}) for a model that thinks before it answers."
    type: dict
    default: {}
  request_timeout:
    description: Seconds one HTTP request may take.
    type: int
    default: 120
author:
  - dgxspark.vllm maintainers (@dgxspark)
"""

EXAMPLES = r"""
- name: Wait up to 15 minutes for the server, then ask it a question with a known answer
  dgxspark.vllm.vllm_probe:
    url: http://127.0.0.1:8000
    wait_timeout: 900
    smoke: true
    model: Qwen/Qwen3.5-27B
  register: probe

- name: Fail unless the server is healthy and answered right
  ansible.builtin.assert:
    that: probe.passed
    fail_msg: "{{ probe.msg }}"
"""

RETURN = r"""
url:
  description: The base URL probed.
  returned: always
  type: str
  sample: http://127.0.0.1:8000
healthy:
  description: Whether C(/health) answered 200.
  returned: always
  type: bool
health_status:
  description: HTTP status of the last C(/health) request, V(null) when no connection was made.
  returned: always
  type: int
  sample: 200
health_error:
  description: Why the last C(/health) request was not a 200 (connection refused, HTTP 503, ...), V(null) when healthy.
  returned: always
  type: str
unit_state:
  description: State of O(systemd_unit) when the wait ended (V(null) without O(systemd_unit)).
  returned: always
  type: dict
  sample: {ActiveState: active, SubState: running, NRestarts: "0"}
waited_s:
  description: Seconds spent waiting for C(/health).
  returned: always
  type: float
  sample: 12.4
smoke:
  description: The smoke request and its result.
  returned: always
  type: dict
  sample:
    ran: true
    passed: true
    http_status: 200
    latency_ms: 412.7
    model: Qwen/Qwen3.5-27B
    question: What is the capital of France? Answer with one word.
    expected: Paris
    answer: Paris
    finish_reason: stop
    completion_tokens: 2
    error: null
passed:
  description: Healthy and, when O(smoke=true), the answer contained O(expected).
  returned: always
  type: bool
msg:
  description: One line saying what was seen, quoting a wrong answer.
  returned: always
  type: str
"""

import json
import time

from urllib.error import HTTPError, URLError
from urllib.request import ProxyHandler, Request, build_opener

from ansible.module_utils.basic import AnsibleModule

# The server is local or on the fleet's network: never go through an HTTP proxy from the environment.
_OPENER = build_opener(ProxyHandler({}))


def http(method, url, timeout, body=None, headers=None):
    """One HTTP request. Returns (status or None, parsed JSON or text or None, error string or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        response = _OPENER.open(request, timeout=timeout)
        status, raw = response.getcode(), response.read()
    except HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, None, "%s" % reason
    text = raw.decode("utf-8", "replace")
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = text
    if 200 <= status < 300:
        return status, payload, None
    return status, payload, "HTTP %d" % status + (": " + text[:300] if text else "")


def unit_state(module, unit):
    """ActiveState, SubState and NRestarts of a systemd unit, or None when systemctl cannot tell."""
    systemctl = module.get_bin_path("systemctl")
    if not systemctl:
        return None
    rc, out, _err = module.run_command([systemctl, "show", "--property=ActiveState,SubState,NRestarts", unit],
                                       environ_update={"LC_ALL": "C"})
    if rc != 0:
        return None
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def unit_gave_up(state, first, allowed_restarts):
    """Why waiting is pointless (the unit died or keeps crashing), or None."""
    if not state:
        return None
    if state.get("ActiveState") in ("failed", "inactive"):
        return "the unit is %s (%s)" % (state.get("ActiveState"), state.get("SubState"))
    try:
        restarts = int(state.get("NRestarts", "0")) - int((first or {}).get("NRestarts", "0"))
    except ValueError:
        return None
    if restarts > allowed_restarts:
        return "the unit restarted %d time(s) while loading (it crashed; allowed: %d)" % (restarts, allowed_restarts)
    return None


def wait_healthy(module, url, wait_timeout, interval, request_timeout, clock=time.monotonic, sleep=time.sleep):
    """Returns (healthy, last status, last error, seconds waited, unit state)."""
    unit = module.params["systemd_unit"]
    start = clock()
    first = unit_state(module, unit) if unit else None
    state = first
    while True:
        status, _payload, error = http("GET", url + "/health", min(request_timeout, 10))
        waited = round(clock() - start, 1)
        if status == 200:
            return True, status, None, waited, state
        if unit:
            state = unit_state(module, unit)
            gave_up = unit_gave_up(state, first, module.params["allowed_restarts"])
            if gave_up:
                return False, status, "%s; %s" % (error, gave_up), waited, state
        if clock() - start + interval > wait_timeout:
            return False, status, error, waited, state
        sleep(interval)


def extract_answer(payload):
    """(content, finish_reason, completion_tokens, problem) from a chat.completion body."""
    try:
        choice = payload["choices"][0]
        message = choice.get("message") or {}
    except (TypeError, KeyError, IndexError, AttributeError):
        return None, None, None, "the response is not an OpenAI chat.completion: %s" % json.dumps(payload)[:300]
    usage = payload.get("usage") or {}
    content = message.get("content")
    problem = None
    if not content:
        problem = "the answer's content is empty (finish_reason=%s)" % choice.get("finish_reason")
        if message.get("reasoning_content") or message.get("reasoning"):
            problem += "; the model only produced reasoning: raise max_tokens or turn thinking off in extra_body"
    return content or "", choice.get("finish_reason"), usage.get("completion_tokens"), problem


def smoke_test(params, clock=time.monotonic):
    result = {"ran": True, "passed": False, "http_status": None, "latency_ms": None, "model": params["model"],
              "question": params["question"], "expected": params["expected"], "answer": None,
              "finish_reason": None, "completion_tokens": None, "error": None}
    body = {"model": params["model"], "messages": [{"role": "user", "content": params["question"]}],
            "max_tokens": params["max_tokens"], "temperature": 0}
    body.update(params["extra_body"] or {})
    headers = {"Authorization": "Bearer " + params["api_key"]} if params["api_key"] else {}
    start = clock()
    status, payload, error = http("POST", params["url"] + "/v1/chat/completions", params["request_timeout"], body, headers)
    result["latency_ms"] = round((clock() - start) * 1000.0, 1)
    result["http_status"] = status
    if error:
        result["error"] = error
        return result
    answer, finish, tokens, problem = extract_answer(payload)
    result.update(answer=answer, finish_reason=finish, completion_tokens=tokens)
    if problem:
        result["error"] = problem
    elif params["expected"].lower() not in answer.lower():
        result["error"] = "the answer does not contain %r" % params["expected"]
    else:
        result["passed"] = True
    return result


def summarise(url, healthy, health_error, waited, smoke, wait_timeout):
    if not healthy:
        return "%s/health did not answer 200 (waited %.0f of %d s; last: %s)" % (url, waited, wait_timeout, health_error)
    if not smoke["ran"]:
        return "%s/health answered 200" % url
    if smoke["passed"]:
        return "%s answered %r to %r in %.0f ms" % (url, smoke["answer"], smoke["question"], smoke["latency_ms"])
    if smoke["answer"] is None:
        return "smoke request to %s/v1/chat/completions (model %r) failed: %s" % (url, smoke["model"], smoke["error"])
    return "wrong answer from %s (model %r): asked %r, expected an answer containing %r, got %r (%s)" % (
        url, smoke["model"], smoke["question"], smoke["expected"], smoke["answer"], smoke["error"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            api_key=dict(type="str", no_log=True),
            wait_timeout=dict(type="int", default=0),
            wait_interval=dict(type="float", default=2.0),
            systemd_unit=dict(type="str"),
            allowed_restarts=dict(type="int", default=0),
            smoke=dict(type="bool", default=False),
            model=dict(type="str"),
            question=dict(type="str", default="What is the capital of France? Answer with one word."),
            expected=dict(type="str", default="Paris"),
            # Not a secret: a count of tokens (validate-modules flags every option named *token*).
            max_tokens=dict(type="int", default=64, no_log=False),
            extra_body=dict(type="dict", default={}),
            request_timeout=dict(type="int", default=120),
        ),
        required_if=[("smoke", True, ("model",))],
        supports_check_mode=True,
    )
    params = module.params
    url = params["url"].rstrip("/")
    params["url"] = url
    if not url.startswith(("http://", "https://")):
        module.fail_json(msg="url=%r: expected an http:// or https:// base URL such as http://127.0.0.1:8000" % url)
    if params["wait_timeout"] < 0 or params["wait_interval"] <= 0 or params["request_timeout"] <= 0:
        module.fail_json(msg="wait_timeout=%s, wait_interval=%s, request_timeout=%s: expected wait_timeout >= 0 and the others > 0"
                         % (params["wait_timeout"], params["wait_interval"], params["request_timeout"]))
    if not params["expected"].strip():
        module.fail_json(msg="expected=%r: the known answer must not be empty" % params["expected"])

    healthy, status, health_error, waited, state = wait_healthy(module, url, params["wait_timeout"],
                                                                params["wait_interval"], params["request_timeout"])
    smoke = {"ran": False, "passed": False, "error": None if healthy else "skipped: the server is not healthy"}
    if healthy and params["smoke"]:
        smoke = smoke_test(params)
    passed = healthy and (smoke["passed"] or not params["smoke"])
    module.exit_json(changed=False, url=url, healthy=healthy, health_status=status, health_error=health_error,
                     waited_s=waited, unit_state=state, smoke=smoke, passed=passed,
                     msg=summarise(url, healthy, health_error, waited, smoke, params["wait_timeout"]))


if __name__ == "__main__":
    main()
