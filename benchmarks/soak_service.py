"""Soak of the real HTTP service on loopback: valid, invalid and oversized requests from many
clients while slowloris-style clients trickle bytes. Prints JSON; stops by itself.

    python benchmarks/soak_service.py MODEL_DIR [--requests 10000] [--clients 32] [--slow-clients 8]

The harness is deepautodnn.experiments.soak (tests/experiments/test_soak.py runs it briefly). It checks nothing
itself; it counts: statuses by request kind, 5xx, connection errors, wrong answers, latency of
the valid requests, the server's RSS after the warm-up and after the soak, and what became of
each slow client.
"""

from __future__ import annotations

import argparse
import sys

from _emit import emit_json

from deepautodnn.experiments.soak import soak
from deepautodnn.utils.runtime import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--requests", type=int, default=10000, help="requests in the soak (default: 10000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent keep-alive clients (default: 32)")
    parser.add_argument("--slow-clients", type=int, default=8, help="slowloris clients (default: 8)")
    parser.add_argument("--warmup", type=int, default=1000, help="untimed requests first (default: 1000)")
    parser.add_argument("--client-timeout", type=float, default=5.0, help="the server's --client-timeout (default: 5)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    result = soak(
        args.model_dir,
        requests=args.requests,
        clients=args.clients,
        slow_clients=args.slow_clients,
        warmup=args.warmup,
        client_timeout=args.client_timeout,
    )
    emit_json(
        {"benchmark": "soak_service", "command": "python " + " ".join(sys.argv), **result, "machine": machine_info()},
        args.out,
    )


if __name__ == "__main__":
    main()
