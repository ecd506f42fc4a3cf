"""What the fleet scenario's test modules share: the tiny model's reference answer and the question asked of a server."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = json.loads((ROOT / ".cache" / "tiny-model" / "current" / "reference.json").read_text())


def answer(host, port=8000, timeout=300):
    """The server's greedy answer to the smoke question, asked on the host itself (a testinfra host)."""
    body = json.dumps({"model": "tiny-llama", "messages": [{"role": "user", "content": REFERENCE["question"]}],
                       "max_tokens": REFERENCE["max_tokens"], "temperature": 0})
    out = host.check_output("python3 -c %s %s %s %s", "import sys, urllib.request; print(urllib.request.urlopen("
                            "urllib.request.Request('http://127.0.0.1:%s/v1/chat/completions' % sys.argv[2], "
                            "data=sys.argv[1].encode(), headers={'Content-Type': 'application/json'}), "
                            "timeout=float(sys.argv[3])).read().decode())", body, str(port), str(timeout))
    return json.loads(out)["choices"][0]["message"]["content"]
