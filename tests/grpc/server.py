"""A gRPC test backend for canary-gate's end-to-end tests and benchmark (grpcio, h2c).

Service `canary.Test`, messages are raw bytes (no protobuf needed on either side):
- `Unary`: answers the version's name. Request metadata `x-grpc-code: N` fails the call with
  status N before any message (a trailers-only response); `x-sleep-ms: N` answers after N ms.
  Without `x-grpc-code`, fails the configured share of calls with the configured code,
  deterministically: exactly 3 of any 10 consecutive calls at a ratio of 0.3.
- `Stream`: sends `x-messages` (default 3) messages, `x-sleep-ms` apart, then ends with status
  `x-grpc-code` (default 0) in the trailers; with `x-crash: 1` the process exits instead, a
  stream cut without a status.
Service `canary.Control`, method `Configure`: a JSON body {"error_ratio": R, "error_code": C}
switches the failure share at run time.

Every answer carries `x-served-by: VERSION` in its initial (or trailers-only) metadata, and
with `--revision REV` `x-canary-revision: REV` and the echo of the router's stamp, as an
observing sidecar stamps it.
Usage: server.py --listen 127.0.0.1:PORT --version NAME [--revision REV] [--error-ratio R]
                 [--error-code C]
"""

import argparse
import json
import os
import signal
import threading
import time
from concurrent import futures

import grpc


class Behaviour:
    """The run-time switchable failure share, shared by the handler threads."""

    def __init__(self, ratio, code):
        self.lock = threading.Lock()
        self.ratio = ratio
        self.code = code
        self.calls = 0

    def configure(self, ratio, code):
        with self.lock:
            self.ratio, self.code, self.calls = ratio, code, 0

    def next_failure(self):
        """The code this call fails with, or None: call k fails when floor(k*ratio) moves."""
        with self.lock:
            self.calls += 1
            k, ratio = self.calls, self.ratio
            if int(k * ratio + 1e-9) > int((k - 1) * ratio + 1e-9):
                return self.code
            return None


def metadata_int(context, name, default):
    for key, value in context.invocation_metadata():
        if key == name:
            try:
                return int(value)
            except ValueError:
                return default
    return default


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--error-ratio", type=float, default=0.0)
    parser.add_argument("--error-code", type=int, default=grpc.StatusCode.UNAVAILABLE.value[0])
    parser.add_argument("--revision")
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()
    behaviour = Behaviour(args.error_ratio, args.error_code)
    served_by = (("x-served-by", args.version),)
    if args.revision:
        served_by += (("x-canary-revision", args.revision),)
    codes = {c.value[0]: c for c in grpc.StatusCode}
    answer = args.version.encode()

    def stamped(context):
        """The headers of an answer: with a revision, the echo of the router's stamp too (the
        router believes a revision only with it), as canary-gate's observer answers."""
        if not args.revision:
            return served_by
        for key, value in context.invocation_metadata():
            if key == "x-canary-gate-fleet":
                stamp = value.rsplit("s=", 1)[-1] if "s=" in value else ""
                if stamp.isdigit():
                    return served_by + (("endpoint-load-metrics", f"TEXT named_metrics.cg.stamp={stamp}"),)
        return served_by

    def fail(context, code):
        context.set_trailing_metadata(stamped(context))
        status = codes.get(code, grpc.StatusCode.UNKNOWN)
        context.abort(status, f"{args.version}: failing with {status.name}")

    def unary(request, context):
        sleep_ms = metadata_int(context, "x-sleep-ms", 0)
        if sleep_ms > 0:
            deadline = time.monotonic() + sleep_ms / 1000
            while time.monotonic() < deadline and context.is_active():
                time.sleep(0.005)
        code = metadata_int(context, "x-grpc-code", -1)
        if code < 0:
            code = behaviour.next_failure()
        if code is not None and code != 0:
            fail(context, code)
        context.send_initial_metadata(stamped(context))
        return answer

    def stream(request, context):
        context.send_initial_metadata(stamped(context))
        sleep_ms = metadata_int(context, "x-sleep-ms", 0)
        for _ in range(metadata_int(context, "x-messages", 3)):
            if not context.is_active():
                return
            yield answer
            if sleep_ms > 0:
                time.sleep(sleep_ms / 1000)
        if metadata_int(context, "x-crash", 0) == 1:
            os._exit(1)
        code = metadata_int(context, "x-grpc-code", 0)
        if code != 0:
            status = codes.get(code, grpc.StatusCode.UNKNOWN)
            context.abort(status, f"{args.version}: failing with {status.name}")

    def configure(request, context):
        settings = json.loads(request or b"{}")
        behaviour.configure(float(settings.get("error_ratio", 0.0)), int(settings.get("error_code", args.error_code)))
        return b"ok"

    identity = {"request_deserializer": None, "response_serializer": None}
    test = grpc.method_handlers_generic_handler(
        "canary.Test",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, **identity),
            "Stream": grpc.unary_stream_rpc_method_handler(stream, **identity),
        },
    )
    control = grpc.method_handlers_generic_handler(
        "canary.Control", {"Configure": grpc.unary_unary_rpc_method_handler(configure, **identity)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads), handlers=(test, control))
    if server.add_insecure_port(args.listen) == 0:
        raise SystemExit(f"cannot listen on {args.listen}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
