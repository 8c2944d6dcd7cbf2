#!/usr/bin/env python3
"""Idle cost and API latency of paz-server with N services of 0 instances each.

Starts paz-server (real Docker scheduler, built-in router, embedded store, all on free
loopback ports), creates N services, lets it settle, then measures the server's CPU time
(user + system, from /proc) over a quiet window, and the latency of GET /v1/services/{name}
and GET /v1/services/{name}/status.

    benches/idle.py [--binary target/release/paz-server] [--baseline old/paz-server]
                    [--window 10] [--settle-max 300] 100 1000 10000

With --baseline, each count is measured for both binaries, one after the other.
A server that never goes quiet is measured after --settle-max seconds.
"""
import argparse, http.client, json, os, random, re, signal, statistics, subprocess, sys, tempfile, time

def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

def run(binary, n, window, samples, settle_max):
    data = tempfile.mkdtemp(prefix="paz-idle-")
    token = "idle-bench-token-0123456789abcdef"
    env = dict(os.environ, PAZ_TOKEN=token, RUST_LOG="warn")
    proc = subprocess.Popen(
        [binary, "--data-dir", data, "--api-listen", "127.0.0.1:0",
         "--router-listen", "127.0.0.1:0", "--internal-names", "false",
         "--docker-network", f"paz-idle-{os.getpid()}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        api = None
        deadline = time.time() + 30
        while api is None and time.time() < deadline:
            line = proc.stdout.readline()
            m = re.match(r"paz-server listening on http://(\S+)", line)
            if m:
                api = m.group(1)
        if api is None:
            raise SystemExit("paz-server did not start")
        host, port = api.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        t0 = time.time()
        perf = None
        if os.environ.get("PERF_CREATE"):
            perf = subprocess.Popen(["perf", "record", "-F", "299", "-g", "-p", str(proc.pid), "-o",
                                     os.environ["PERF_CREATE"], "--", "sleep", "20"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(n):
            body = json.dumps({"name": f"svc-{i}", "image": "paz-demo:v1", "instances": 0,
                               "ports": [{"port": 8080}], "public": i % 2 == 0})
            conn.request("POST", "/v1/services", body, headers)
            r = conn.getresponse(); r.read()
            if r.status != 201:
                raise SystemExit(f"create svc-{i}: {r.status}")
        created = time.time() - t0
        if perf:
            perf.wait()
        # Let the reconciles of the creates finish: until the server is quiet (under 2 % of
        # a core for 3 s in a row), at most 300 s.
        t1 = time.time()
        quiet, last = 0, cpu_seconds(proc.pid)
        while quiet < 3 and time.time() - t1 < settle_max:
            time.sleep(1)
            now = cpu_seconds(proc.pid)
            quiet = quiet + 1 if now - last < 0.02 else 0
            last = now
        settled = time.time() - t1
        if os.environ.get("PERF"):
            subprocess.run(["perf", "record", "-F", "499", "-g", "-p", str(proc.pid), "-o",
                            os.environ["PERF"], "--", "sleep", "5"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c0 = cpu_seconds(proc.pid)
        time.sleep(window)
        idle = cpu_seconds(proc.pid) - c0
        latencies = {}
        # A fresh connection: the API closes connections idle for as long as the window.
        conn.close()
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for path in ("/v1/services/{}", "/v1/services/{}/status"):
            times = []
            for _ in range(samples):
                name = f"svc-{random.randrange(max(n, 1))}" if n else "missing"
                start = time.perf_counter()
                conn.request("GET", path.format(name), headers=headers)
                r = conn.getresponse(); r.read()
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            latencies[path] = (statistics.median(times), times[int(len(times) * 0.99) - 1])
        return created, settled, idle, latencies
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["docker", "network", "rm", f"paz-idle-{os.getpid()}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", data])

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "paz-server"))
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--settle-max", type=float, default=300.0,
                   help="longest wait for the server to go quiet after the creates (s)")
    p.add_argument("--baseline", help="another paz-server binary, measured right after each count")
    p.add_argument("counts", nargs="*", type=int, default=[0, 100, 1000, 10000])
    args = p.parse_args()
    print(f"{'services':>8} {'create s':>9} {'settle s':>9} {'idle CPU s/' + str(int(args.window)) + 's':>16} {'% core':>7}"
          f" {'GET p50 ms':>10} {'GET p99 ms':>10} {'status p50':>10} {'status p99':>10}")
    binaries = [("", args.binary)] + ([("baseline ", args.baseline)] if args.baseline else [])
    for n in args.counts:
        for label, binary in binaries:
            created, settled, idle, lat = run(binary, n, args.window, args.samples, args.settle_max)
            g, s = lat["/v1/services/{}"], lat["/v1/services/{}/status"]
            print(f"{label}{n:>8} {created:>9.1f} {settled:>9.1f} {idle:>16.2f} {100 * idle / args.window:>7.2f}"
                  f" {g[0]:>10.2f} {g[1]:>10.2f} {s[0]:>10.2f} {s[1]:>10.2f}", flush=True)

if __name__ == "__main__":
    main()
