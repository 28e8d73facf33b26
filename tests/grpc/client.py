"""A gRPC client for canary-gate's end-to-end tests (grpcio, h2c, raw-bytes messages).

  client.py calls --target HOST:PORT --plan JSON
      Runs each call of the plan, in order: {"method": "Unary"|"Stream", "metadata": {..},
      "timeout_s": T, "cancel_after_s": C, "count": N}. Prints a JSON list, one entry per
      call: {"code": N, "messages": N, "metadata": {initial and trailing metadata}}.
  client.py load --target HOST:PORT --seconds S [--threads N] [--pause-ms P] [--max-calls M]
                 [--override-every K] [--fault-at S --fault-target HOST:PORT --fault JSON]
      Unary calls from N threads, at most M each (default 30,000), each cycling over 1,000
      users (`x-user-id`), every K-th a
      tester's override (`x-canary: canary`); at --fault-at, sends --fault to the Control
      service at --fault-target. Prints {"fault_s": F, "events": [[sent_s, overridden, code,
      version, reason, served_by], ...]}.
  client.py configure --target HOST:PORT --json JSON
"""

import argparse
import json
import threading
import time

import grpc

IDENTITY = {"request_serializer": None, "response_deserializer": None}


def merged(call):
    found = {}
    for part in (call.initial_metadata, call.trailing_metadata):
        try:
            for key, value in part() or ():
                found.setdefault(key, value)
        except Exception:  # a cancelled call has none
            pass
    return found


def run_call(channel, spec):
    method = spec.get("method", "Unary")
    metadata = tuple((k, str(v)) for k, v in spec.get("metadata", {}).items())
    timeout = spec.get("timeout_s")
    cancel_after = spec.get("cancel_after_s")
    messages = 0
    if method == "Unary":
        rpc = channel.unary_unary("/canary.Test/Unary", **IDENTITY)
        call = rpc.future(b"", metadata=metadata, timeout=timeout)
        if cancel_after is not None:
            time.sleep(cancel_after)
            call.cancel()
        try:
            call.result()
            messages = 1
        except grpc.FutureCancelledError:
            pass
        except grpc.RpcError:
            pass
        code = call.code()
    else:
        rpc = channel.unary_stream("/canary.Test/Stream", **IDENTITY)
        call = rpc(b"", metadata=metadata, timeout=timeout)
        try:
            for _ in call:
                messages += 1
                if cancel_after is not None:
                    time.sleep(cancel_after)
                    call.cancel()
        except grpc.RpcError:
            pass
        code = call.code()
    return {"code": code.value[0] if code else -1, "messages": messages, "metadata": merged(call)}


def calls(args):
    plan = json.loads(args.plan)
    results = []
    with grpc.insecure_channel(args.target) as channel:
        for spec in plan:
            for _ in range(spec.get("count", 1)):
                results.append(run_call(channel, spec))
    print(json.dumps(results))


def configure(target, settings):
    with grpc.insecure_channel(target) as channel:
        channel.unary_unary("/canary.Control/Configure", **IDENTITY)(settings.encode(), timeout=10)


def load(args):
    start = time.monotonic()
    stop = threading.Event()
    events = [[] for _ in range(args.threads)]

    def worker(t):
        with grpc.insecure_channel(args.target) as channel:
            rpc = channel.unary_unary("/canary.Test/Unary", **IDENTITY)
            n = 0
            while not stop.is_set() and n < args.max_calls:
                overridden = args.override_every > 0 and n % args.override_every == 0
                metadata = [("x-user-id", f"load-{t}-{n % 1000}")]
                if overridden:
                    metadata.append(("x-canary", "canary"))
                sent = time.monotonic() - start
                try:
                    _, call = rpc.with_call(b"", metadata=metadata, timeout=10)
                except grpc.RpcError as error:
                    call = error
                found = merged(call)
                code = call.code()
                events[t].append([
                    round(sent, 6), overridden, code.value[0] if code else -1,
                    found.get("x-canary-version"), found.get("x-canary-reason"), found.get("x-served-by"),
                ])
                n += 1
                if args.pause_ms > 0:
                    time.sleep(args.pause_ms / 1000)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(args.threads)]
    for thread in threads:
        thread.start()
    fault_s = None
    if args.fault_at is not None:
        time.sleep(max(0.0, args.fault_at - (time.monotonic() - start)))
        fault_s = time.monotonic() - start
        configure(args.fault_target, args.fault)
    time.sleep(max(0.0, args.seconds - (time.monotonic() - start)))
    stop.set()
    for thread in threads:
        thread.join()
    merged_events = sorted((e for per in events for e in per), key=lambda e: e[0])
    print(json.dumps({"fault_s": fault_s, "events": merged_events}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["calls", "load", "configure"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--plan", default="[]")
    parser.add_argument("--json", default="{}")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause-ms", type=float, default=0)
    parser.add_argument("--max-calls", type=int, default=30000)
    parser.add_argument("--override-every", type=int, default=0)
    parser.add_argument("--fault-at", type=float)
    parser.add_argument("--fault-target")
    parser.add_argument("--fault", default="{}")
    args = parser.parse_args()
    if args.mode == "calls":
        calls(args)
    elif args.mode == "load":
        load(args)
    else:
        configure(args.target, args.json)


if __name__ == "__main__":
    main()
