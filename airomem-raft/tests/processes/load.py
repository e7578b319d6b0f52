"""A load client for the replicated session service, written against its HTTP API alone
(standard library only): THREADS threads send `POST /sessions` to the nodes round-robin,
each request with a user id no other request uses, and record every outcome.

    python3 load.py REPORT.json http://127.0.0.1:8081 http://127.0.0.1:8082 ...

Each 201 is also printed as `ack START END` (the request's start and end, Unix seconds) on
stdout as it comes, so that the caller can time a failover. The client runs until its stdin
closes, then lets each thread finish its request in flight and writes REPORT.json:

    {"acked": [[token, user_id], ...], "outcomes": {"201": n, "503": n, ...},
     "not_applied": n, "unknown": n}

`not_applied` counts the requests that certainly created nothing (503; the connection
refused); `unknown` those whose outcome nobody knows (504, a connection that broke after
the request went out, a timeout): each may or may not have created its session.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

THREADS = 16
# Above the service's commit timeout (10 s by default): a request left this long is stuck.
TIMEOUT_SECS = 30
USERS_PER_THREAD = 1_000_000_000


def main():
    report_path, bases = sys.argv[1], sys.argv[2:]
    targets = [urllib.parse.urlsplit(base).netloc for base in bases]
    stop = threading.Event()
    lock = threading.Lock()
    acked, outcomes = [], {}
    counts = {"not_applied": 0, "unknown": 0}

    def record(outcome, kind=None):
        with lock:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if kind:
                counts[kind] += 1

    def client(index):
        connections = {}
        request = 0
        while not stop.is_set():
            target = targets[(index + request) % len(targets)]
            user_id = index * USERS_PER_THREAD + request
            request += 1
            body = json.dumps({"user_id": user_id})
            connection = connections.get(target)
            if connection is None:
                connection = http.client.HTTPConnection(target, timeout=TIMEOUT_SECS)
                connections[target] = connection
            start = time.time()
            try:
                connection.request("POST", "/sessions", body, {"content-type": "application/json"})
                response = connection.getresponse()
                text = response.read()
            except ConnectionRefusedError:
                # Nothing reached the node.
                connections.pop(target).close()
                record("refused", "not_applied")
                time.sleep(0.05)
                continue
            except (OSError, http.client.HTTPException) as e:
                # The node died or stalled with the request (maybe) delivered.
                connections.pop(target).close()
                record(type(e).__name__, "unknown")
                time.sleep(0.05)
                continue
            status = response.status
            if status == 201:
                token = json.loads(text)["token"]
                with lock:
                    acked.append([token, user_id])
                    outcomes["201"] = outcomes.get("201", 0) + 1
                    print(f"ack {start:.6f} {time.time():.6f}", flush=True)
            elif status == 503:
                record("503", "not_applied")
            elif status == 504:
                record("504", "unknown")
            else:
                # Anything else is a bug the caller fails on; count it as unknown too.
                record(str(status), "unknown")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    sys.stdin.read()
    stop.set()
    for thread in threads:
        thread.join()
    with open(report_path, "w") as report:
        json.dump({"acked": acked, "outcomes": outcomes, **counts}, report)
    print("done", flush=True)


if __name__ == "__main__":
    main()
