"""Run vLLM's own serving benchmark (vllm.benchmarks.serve: what `vllm bench serve` runs) once per concurrency
against a server, and print one JSON line per run after the marker DGXSPARK_BENCH_RESULT.

It is started with the server's venv Python (ansible.builtin.script), so it needs nothing but vLLM. It goes through
vLLM's module rather than the `vllm` script because vLLM's CPU build stops that script at start (it looks up the
version of a distribution named "vllm"). Nothing is written on the host: results are kept in memory.

    python bench_serve.py '{"base_url": "http://127.0.0.1:8000", "model": "m", "tokenizer": "/srv/m",
                            "input_len": 32, "output_len": 16, "num_prompts": 8, "concurrencies": [1, 4]}'
"""

import json
import sys

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

KEYS = ("completed", "duration", "request_throughput", "output_throughput", "total_token_throughput",
        "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "total_input_tokens", "total_output_tokens")


def run(settings, concurrency):
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = ["--backend", "openai", "--base-url", settings["base_url"], "--endpoint", "/v1/completions",
            "--model", settings["model"], "--tokenizer", settings["tokenizer"],
            "--dataset-name", "random", "--random-input-len", str(settings["input_len"]),
            "--random-output-len", str(settings["output_len"]), "--num-prompts", str(settings["num_prompts"]),
            "--max-concurrency", str(concurrency), "--request-rate", "inf", "--ignore-eos",
            "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "50,99", "--seed", "0",
            "--disable-tqdm", "--ready-check-timeout-sec", "60"]
    args = parser.parse_args(argv)
    result = main(args)
    row = {key: result.get(key) for key in KEYS}
    row["concurrency"] = concurrency
    row["failed"] = settings["num_prompts"] - (result.get("completed") or 0)
    return row


def entry():
    settings = json.loads(sys.argv[1])
    for concurrency in settings["concurrencies"]:
        print("DGXSPARK_BENCH_RESULT " + json.dumps(run(settings, concurrency)), flush=True)


if __name__ == "__main__":
    entry()
