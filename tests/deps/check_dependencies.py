#!/usr/bin/env python3
"""Checks that jobd's rooms depend on each other only one way.

A room is a folder of proto/, workers/, server/ or client/ with sources in
it; it is one library (docs/ARCHITECTURE.md). An arrow goes from room A to
room B when a file of A includes a header of B. The rules (DESIGN.md):

  * workers never include gRPC or server or client headers: proto <- workers;
  * the client never includes server or workers headers: proto <- client;
  * the server never includes client headers;
  * proto includes nothing of ours but proto;
  * the task SDK (workers/sdk), which is installed for plugin authors,
    includes nothing of ours but itself and jobd.v1; the plugin loader
    (workers/plugins) uses only the SDK; plugins (examples/) include only
    what is installed: the SDK and jobd.v1;
  * the Python tasks room (workers/python), which embeds CPython, uses
    only the SDK; of the server, only config and the daemon use it (never
    the frontend or the scheduler: the daemon's threads never see Python);
  * only the process pool (workers/process) includes the private worker
    protocol (jobd/internal/), directly or through a header it includes
    (a header of the pool that others include must not bring it in);
  * only the journal (server/journal) includes its log's record format
    (jobd/journal/);
  * the metrics endpoint (server/metrics) reads the scheduler and knows
    neither gRPC nor the frontend, config or daemon: it renders what the
    scheduler knows (and checks callers with server/auth); only the daemon
    uses it;
  * callers and roles (server/auth) know no gRPC and no other server
    room; the frontend, the dashboard and the metrics endpoint use them;
  * the dashboard (server/dashboard) reads the scheduler and checks
    callers with server/auth; it knows neither gRPC nor the frontend,
    config, daemon or metrics endpoint; only the daemon uses it;
  * the telemetry room (server/telemetry: histograms and per-RPC
    counters that the frontend, the journal and the scheduler write and
    the metrics endpoint reads) is a leaf: it includes nothing of ours
    but itself, and no gRPC (status codes are plain ints there);
  * push callbacks (server/callbacks) know neither gRPC nor the scheduler,
    frontend, config or daemon: the scheduler hands them its terminal
    events through an interface of server/jobs (CallbackHook), so the
    scheduler never includes them either;
  * cluster mode (server/cluster: the Redis connection, membership,
    leases) knows no gRPC and neither the frontend, config nor daemon:
    the daemon builds it and hands its stats to GetStats; of the server,
    only config and the daemon include it;
  * no circle between rooms.

Usage: check_dependencies.py [ROOT]      check the tree at ROOT (default: .)
       check_dependencies.py --self-test plant each kind of violation in a
                                         small tree and check it is caught
Exit status 0 if clean, 1 with one line per violation otherwise.
"""

import os
import re
import sys
import tempfile

TOP = ("proto", "workers", "server", "client", "examples")
SOURCE = (".h", ".cc", ".proto")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"|^\s*import\s+"([^"]+)"')

def room_of(folder):
    """The room a folder belongs to: an internal/ folder is its parent's."""
    return os.path.dirname(folder) if os.path.basename(folder) == "internal" \
        and not folder.startswith("proto/") else folder


# Where an included path lives: generated proto headers are named by their
# package path (jobd/v1/...), the rest by their path from the root.
def room_of_include(path):
    if path.startswith("jobd/internal/"):
        return "proto/jobd/internal"
    if path.startswith("jobd/journal/"):
        return "proto/jobd/journal"
    if path.startswith("jobd/v1/"):
        return "proto/jobd/v1"
    head = path.split("/", 1)[0]
    if head in TOP:
        return room_of(os.path.dirname(path))
    return None  # A library's header (absl/, grpcpp/, ...).


def forbidden(room, include):
    """Why `room` may not include `include`, or None."""
    top = room.split("/", 1)[0]
    if include.startswith("jobd/internal/") and not (
            room == "workers/process" or room.startswith("proto/")):
        return "only workers/process uses the private worker protocol"
    if include.startswith("jobd/journal/") and not (
            room == "server/journal" or room.startswith("proto/")):
        return "only server/journal reads and writes its log's records"
    grpc = (include.startswith(("grpcpp/", "grpc/", "grpc++/")) or
            include.endswith(".grpc.pb.h"))
    target = room_of_include(include)
    target_top = target.split("/", 1)[0] if target else None
    if room == "workers/sdk" and target not in (None, "workers/sdk",
                                                "proto/jobd/v1"):
        return "the SDK is installed alone: it includes only itself and jobd.v1"
    if room == "workers/plugins" and target not in (None, "workers/sdk",
                                                    "workers/plugins"):
        return "the plugin loader uses only the SDK"
    if room == "workers/python" and target not in (None, "workers/sdk",
                                                   "workers/python",
                                                   "proto/jobd/v1"):
        return "the Python tasks room uses only the SDK"
    if (target == "workers/python" and top == "server" and
            room not in ("server/config", "server/daemon")):
        return "of the server, only config and the daemon use Python tasks"
    if top == "examples" and target not in (None, "workers/sdk",
                                            "proto/jobd/v1"):
        return "a plugin includes only the installed SDK and jobd.v1"
    if top == "workers":
        if grpc:
            return "workers never know about gRPC"
        if target_top in ("server", "client"):
            return "workers never include %s headers" % target_top
    if top == "client" and target_top in ("server", "workers"):
        return "the client never includes %s headers" % target_top
    if room == "server/metrics" and (grpc or target in (
            "server/frontend", "server/config", "server/daemon")):
        return "the metrics endpoint renders the scheduler's stats only"
    if room == "server/telemetry" and (
            grpc or target not in (None, "server/telemetry")):
        return "telemetry is a leaf: it includes nothing of ours, nor gRPC"
    if (target == "server/metrics" and room != "server/metrics" and
            room != "server/daemon"):
        return "only the daemon uses the metrics endpoint"
    if room == "server/auth" and (grpc or (target_top == "server" and
                                           target != "server/auth")):
        return "callers and roles know no transport and no other server room"
    if room == "server/dashboard" and (grpc or target in (
            "server/frontend", "server/config", "server/daemon",
            "server/metrics")):
        return "the dashboard reads the scheduler and server/auth only"
    if (target == "server/dashboard" and room != "server/dashboard" and
            room != "server/daemon"):
        return "only the daemon uses the dashboard"
    if room == "server/schedules" and (grpc or target in (
            "server/frontend", "server/config", "server/daemon",
            "server/metrics")):
        return "schedules submit through the scheduler; they know no RPC edge"
    if target == "server/schedules" and room in (
            "server/scheduler", "server/journal", "server/jobs"):
        return "the scheduler and journal know nothing of schedules"
    if room == "server/callbacks" and (grpc or target in (
            "server/scheduler", "server/frontend", "server/config",
            "server/daemon")):
        return "callbacks see jobs only through the scheduler's CallbackHook"
    if room == "server/cluster" and (grpc or target in (
            "server/frontend", "server/config", "server/daemon",
            "server/metrics", "server/dashboard")):
        return "cluster mode knows no RPC edge: the daemon builds it"
    if (target == "server/cluster" and room != "server/cluster" and
            room not in ("server/config", "server/daemon")):
        return "of the server, only config and the daemon use cluster mode"
    if room == "server/scheduler" and target == "server/callbacks":
        return "the scheduler knows callbacks only as a CallbackHook"
    if top == "server" and target_top == "client":
        return "the server never includes client headers"
    if top == "proto" and target_top not in (None, "proto"):
        return "proto includes nothing of ours but proto"
    return None


def scan(root):
    """Yields (room, file, include) for each include of ours under root."""
    for top in TOP:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in sorted(filenames):
                if not name.endswith(SOURCE):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                room = room_of(os.path.dirname(rel))
                with open(path, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        m = INCLUDE.match(line)
                        if m:
                            yield room, rel, m.group(1) or m.group(2)


def find_circle(graph):
    """One circle of `graph` (room -> set of rooms) as a list, or None."""
    state = {}  # room -> 1 on the path, 2 done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def private_chain(root, header, memo):
    """The include chain from `header` (a path from the root) to the private
    worker protocol, as a list, or None if it does not lead there."""
    if header.startswith("jobd/internal/"):
        return [header]
    if header in memo:
        return memo[header]
    memo[header] = None  # Also breaks include cycles.
    path = os.path.join(root, header)
    if header.split("/", 1)[0] not in TOP or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = INCLUDE.match(line)
            chain = m and private_chain(root, m.group(1) or m.group(2), memo)
            if chain:
                memo[header] = [header] + chain
                break
    return memo[header]


def check(root):
    problems = []
    graph = {}
    memo = {}
    for room, rel, include in scan(root):
        why = forbidden(room, include)
        if why:
            problems.append("%s includes %s: %s" % (rel, include, why))
        elif forbidden(room, "jobd/internal/"):
            chain = private_chain(root, include, memo)
            if chain:
                problems.append(
                    "%s includes %s, which brings in the private worker "
                    "protocol (%s): %s" % (rel, include, " -> ".join(chain),
                                           forbidden(room, "jobd/internal/")))
        target = room_of_include(include)
        if target and target != room:
            graph.setdefault(room, set()).add(target)
    circle = find_circle(graph)
    if circle:
        problems.append("rooms in a circle: " + " -> ".join(circle))
    return problems


def self_test():
    """Each rule must catch its planted violation, and a clean tree pass."""
    base = {
        "proto/jobd/v1/jobd.proto": 'import "google/protobuf/struct.proto";\n',
        "workers/sdk/task.h": '#include "jobd/v1/jobd.pb.h"\n',
        "workers/process/pool.cc":
            '#include "workers/sdk/task.h"\n#include "jobd/internal/worker.pb.h"\n'
            '#include "workers/process/internal/core.h"\n',
        "workers/process/internal/core.h": '#include "jobd/internal/worker.pb.h"\n',
        "workers/process/pool.h": '#include "workers/sdk/task.h"\n',
        "server/daemon/main.cc": '#include "workers/process/pool.h"\n',
        "server/scheduler/scheduler.h": '#include "workers/sdk/task.h"\n',
        "server/frontend/service.cc":
            '#include "grpcpp/grpcpp.h"\n#include "server/scheduler/scheduler.h"\n',
        "client/client.h": '#include "jobd/v1/jobd.grpc.pb.h"\n',
        "workers/plugins/loader.cc": '#include "workers/sdk/task.h"\n',
        "workers/python/python_tasks.cc": '#include "workers/sdk/task.h"\n',
        "server/metrics/exposition.cc":
            '#include "server/scheduler/scheduler.h"\n',
        "examples/plugins/p/p.cc": '#include "workers/sdk/task.h"\n',
        "server/auth/authenticator.h": '#include "workers/sdk/utf8.h"\n',
        "server/dashboard/dashboard.cc":
            '#include "server/scheduler/scheduler.h"\n'
            '#include "server/auth/authenticator.h"\n',
        "server/telemetry/rpc_stats.h": '#include "absl/time/time.h"\n',
        "server/frontend/rpc.cc": '#include "server/telemetry/rpc_stats.h"\n',
        "server/schedules/runner.cc":
            '#include "server/scheduler/scheduler.h"\n',
        "server/callbacks/dispatcher.cc": '#include "workers/sdk/task.h"\n',
        "server/cluster/membership.cc": '#include "workers/sdk/utf8.h"\n',
    }
    planted = {
        "a worker including gRPC": ("workers/sdk/task.cc", '#include "grpcpp/grpcpp.h"\n'),
        "a worker including the server": (
            "workers/sdk/task.cc", '#include "server/scheduler/scheduler.h"\n'),
        "the client including the server": (
            "client/client.cc", '#include "server/frontend/service.h"\n'),
        "the client including the worker protocol": (
            "client/client.cc", '#include "jobd/internal/worker.pb.h"\n'),
        "the scheduler including the journal's log records": (
            "server/scheduler/scheduler.cc", '#include "jobd/journal/log.pb.h"\n'),
        "a public header of the pool bringing in the worker protocol": (
            "workers/process/pool.h", '#include "workers/process/internal/core.h"\n'),
        "the server including the client": (
            "server/frontend/service.h", '#include "client/client.h"\n'),
        "the SDK including another room": (
            "workers/sdk/task.cc", '#include "workers/os/unique_fd.h"\n'),
        "the plugin loader including a task room": (
            "workers/plugins/loader.cc", '#include "workers/tasks/builtin.h"\n'),
        "the Python tasks room including the process pool": (
            "workers/python/python_tasks.cc",
            '#include "workers/process/pool.h"\n'),
        "the scheduler including the Python tasks room": (
            "server/scheduler/scheduler.cc",
            '#include "workers/python/python_tasks.h"\n'),
        "a plugin including what is not installed": (
            "examples/plugins/p/p.cc", '#include "workers/reactor/reactor.h"\n'),
        "the metrics endpoint including the frontend": (
            "server/metrics/exposition.cc",
            '#include "server/frontend/service.h"\n'),
        "the frontend including the metrics endpoint": (
            "server/frontend/service.cc",
            '#include "server/metrics/exposition.h"\n'),
        "callers and roles including gRPC": (
            "server/auth/authenticator.cc", '#include "grpcpp/grpcpp.h"\n'),
        "callers and roles including the scheduler": (
            "server/auth/authenticator.cc",
            '#include "server/scheduler/scheduler.h"\n'),
        "the dashboard including the frontend": (
            "server/dashboard/dashboard.cc",
            '#include "server/frontend/auth.h"\n'),
        "the dashboard including gRPC": (
            "server/dashboard/dashboard.cc", '#include "grpcpp/grpcpp.h"\n'),
        "the frontend including the dashboard": (
            "server/frontend/service.cc",
            '#include "server/dashboard/dashboard.h"\n'),
        "telemetry including the scheduler": (
            "server/telemetry/rpc_stats.h",
            '#include "server/scheduler/scheduler.h"\n'),
        "telemetry including gRPC": (
            "server/telemetry/rpc_stats.h", '#include "grpcpp/grpcpp.h"\n'),
        "schedules including the frontend": (
            "server/schedules/runner.cc",
            '#include "server/frontend/service.h"\n'),
        "cluster mode including gRPC": (
            "server/cluster/membership.cc", '#include "grpcpp/grpcpp.h"\n'),
        "cluster mode including the frontend": (
            "server/cluster/membership.cc",
            '#include "server/frontend/service.h"\n'),
        "the scheduler including cluster mode": (
            "server/scheduler/scheduler.cc",
            '#include "server/cluster/membership.h"\n'),
        "schedules including gRPC": (
            "server/schedules/runner.cc", '#include "grpcpp/grpcpp.h"\n'),
        "the scheduler including schedules": (
            "server/scheduler/scheduler.h",
            '#include "server/schedules/runner.h"\n'),
        "callbacks including the scheduler": (
            "server/callbacks/dispatcher.cc",
            '#include "server/scheduler/scheduler.h"\n'),
        "the scheduler including callbacks": (
            "server/scheduler/scheduler.cc",
            '#include "server/callbacks/dispatcher.h"\n'),
        "a circle": ("server/scheduler/scheduler.cc",
                     '#include "server/frontend/service.h"\n'),
    }
    failures = []
    with tempfile.TemporaryDirectory() as clean:
        write_tree(clean, base)
        if check(clean):
            failures.append("the clean tree was refused: %s" % check(clean))
    for what, (path, line) in planted.items():
        with tempfile.TemporaryDirectory() as tree:
            write_tree(tree, dict(base, **{path: base.get(path, "") + line}))
            if not check(tree):
                failures.append("not caught: " + what)
    for f in failures:
        print("self-test: " + f)
    if not failures:
        print("self-test: %d planted violations caught, clean tree passed"
              % len(planted))
    return 1 if failures else 0


def write_tree(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    root = argv[1] if len(argv) > 1 else "."
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        print("%d dependency problem(s); the rules: %s" % (len(problems), __file__))
        return 1
    print("dependencies: one way, no circle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
