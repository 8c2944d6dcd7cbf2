#!/usr/bin/env bash
# Deploy-time benchmarks, as ratios measured in one run on this machine:
#   1. the physical floor: `docker run` of the demo image until its /health answers 200
#      (one batch of a rolling deploy cannot be faster);
#   2. Paz: `paz deploy` of a 3-instance service (rolling, start-first), max_surge 1 and 3;
#   3. Docker Swarm: `docker service update --update-order start-first` of the same image
#      and health check on a single-node swarm, parallelism 1 and 3;
#   4. healthy -> routable: from an instance's health check passing to the first request the
#      router sends it (client under load, server log timestamps).
# Usage: benches/deploy.sh [runs]   (default 5; prints medians and ratios)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
NET=paz-bench-$$
WORK=$(mktemp -d)
SWARM_STARTED=0
cleanup() {
  [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  docker ps -aq --filter "network=$NET" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  if [ "$SWARM_STARTED" = 1 ]; then docker service rm web-swarm >/dev/null 2>&1 || true; docker swarm leave --force >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.stdin.read().split()]; print(f"{statistics.median(v):.0f}")'; }
now_ms() { date +%s%3N; }

command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
cargo build --release -q -p paz-server -p paz-cli
scripts/build-demo-image.sh paz-demo:v1 paz-demo:v2 paz-demo:v3 >/dev/null
BIN=${CARGO_TARGET_DIR:-target}/release

# The floor of one batch of K instances: K `docker run`s at once, until every /health is 200.
floor_batch() {
  local k=$1 start ids ip
  start=$(now_ms)
  ids=$(for _ in $(seq "$k"); do docker run -d --network "$NET" paz-demo:v1 & done; wait)
  for id in $ids; do
    ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$id")
    until curl -sf -o /dev/null "http://$ip:8080/health"; do sleep 0.005; done
  done
  echo $(( $(now_ms) - start ))
  docker rm -f $ids >/dev/null
}
docker network create "$NET" >/dev/null
declare -A FLOOR
for k in 1 3; do
  echo "== floor: $k x docker run at once -> every /health answers 200 ($RUNS runs)"
  : > "$WORK/floor-$k"
  for _ in $(seq "$RUNS"); do floor_batch "$k" >> "$WORK/floor-$k"; done
  FLOOR[$k]=$(median < "$WORK/floor-$k")
  echo "   one batch of $k: ${FLOOR[$k]} ms (runs: $(tr '\n' ' ' < "$WORK/floor-$k"))"
done

echo "== Paz: paz deploy of 3 instances ($RUNS runs per setting)"
mkdir -p "$WORK/data"
RUST_LOG=info "$BIN/paz-server" --data-dir "$WORK/data" --api-listen 127.0.0.1:0 --router-listen 127.0.0.1:0 \
  --docker-network "$NET" > "$WORK/server.out" 2> "$WORK/server.log" &
SERVER_PID=$!
until grep -q "router listening" "$WORK/server.out" 2>/dev/null; do sleep 0.1; done
export PAZ_SERVER=$(sed -n 's/^paz-server listening on //p' "$WORK/server.out")
export PAZ_TOKEN=$(cat "$WORK/data/admin-token")
ROUTER=$(sed -n 's/^paz-server router listening on http:\/\///p' "$WORK/server.out")
PAZ="$BIN/paz"
$PAZ service create web --image paz-demo:v1 --instances 3 --port 8080 --public --health-path /health >/dev/null
until $PAZ history web --output json | grep -q '"succeeded"'; do sleep 0.2; done
declare -A PAZ_MS
n=0
for surge in 1 3; do
  $PAZ service update web --max-surge "$surge" >/dev/null 2>&1
  $PAZ deploy web >/dev/null 2>&1
  : > "$WORK/paz-$surge"
  for _ in $(seq "$RUNS"); do
    n=$((n + 1)); image=paz-demo:v$((2 + n % 2))
    start=$(now_ms); $PAZ deploy web --image "$image" >/dev/null 2>&1; echo $(( $(now_ms) - start )) >> "$WORK/paz-$surge"
    $PAZ history web --output json | python3 -c 'import sys,json,datetime
d=json.load(sys.stdin)[-1]; t=lambda k: datetime.datetime.fromisoformat(d[k].replace("Z","+00:00")).timestamp()
print(round((t("finished_at")-t("created_at"))*1000))' >> "$WORK/paz-server-$surge"
  done
  PAZ_MS[$surge]=$(median < "$WORK/paz-$surge")
  echo "   max_surge $surge: CLI ${PAZ_MS[$surge]} ms (runs: $(tr '\n' ' ' < "$WORK/paz-$surge")); recorded by the server: $(median < "$WORK/paz-server-$surge") ms (runs: $(tr '\n' ' ' < "$WORK/paz-server-$surge"))"
done

echo "== healthy -> routable (router under load during 3 deploys)"
python3 - "$ROUTER" "$WORK/seen" <<'PY' &
import sys, threading, time, http.client
router, out = sys.argv[1], sys.argv[2]
host, port = router.split(":")
seen, stop = {}, time.time() + 25
def hammer():
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    while time.time() < stop:
        try:
            conn.request("GET", "/", headers={"Host": "web.localhost"})
            r = conn.getresponse(); r.read()
            inst = r.getheader("X-Demo-Instance") or ""
            t = time.time()
            if inst and inst not in seen:
                seen[inst] = t
        except Exception:
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
threads = [threading.Thread(target=hammer) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
with open(out, "w") as f:
    for inst, t in seen.items(): f.write(f"{inst} {t}\n")
PY
LOAD_PID=$!
sleep 1
for image in paz-demo:v2 paz-demo:v3 paz-demo:v2; do $PAZ deploy web --image "$image" >/dev/null 2>&1; done
wait $LOAD_PID
python3 - "$WORK/server.log" "$WORK/seen" <<'PY'
import sys, re, statistics, datetime
log, seen_file = sys.argv[1], sys.argv[2]
seen = dict(l.split() for l in open(seen_file))
ansi = re.compile(r"\x1b\[[0-9;]*m")
healthy, internal = {}, []
for line in open(log):
    line = ansi.sub("", line)
    m = re.match(r"(\S+Z)\s+INFO .*instance healthy.* id=(\w+)", line) or re.match(r"(\S+Z)\s+INFO .*id=(\w+).*instance healthy", line)
    if "instance healthy" in line:
        ts = line.split()[0]
        idm = re.search(r"id=(\w+)", line)
        if idm:
            healthy[idm.group(1)[:12]] = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    if "instance routable" in line:
        us = re.search(r"after_healthy_us=(\d+)", line)
        if us: internal.append(int(us.group(1)) / 1000)
deltas = [(float(seen[i]) - t) * 1000 for i, t in healthy.items() if i in seen and float(seen[i]) >= t - 1]
if deltas:
    print(f"   health check passed -> first routed request: median {statistics.median(deltas):.1f} ms, max {max(deltas):.1f} ms (n={len(deltas)})")
if internal:
    print(f"   health check passed -> route table swapped (server side): median {statistics.median(internal):.2f} ms (n={len(internal)})")
PY
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=

echo "== Docker Swarm: docker service update --update-order start-first ($RUNS runs per setting)"
if docker info --format '{{.Swarm.LocalNodeState}}' | grep -q inactive; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null; SWARM_STARTED=1
fi
docker service create --detach -q --name web-swarm --replicas 3 --no-resolve-image \
  --update-order start-first paz-demo:v1 >/dev/null
# `--health-cmd` runs through a shell, which the scratch image lacks: set the exec form
# (the same probe and interval as Paz's check) through the API.
python3 - <<'PY'
import json, socket, http.client
class U(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect("/var/run/docker.sock")
c = U("docker"); c.request("GET", "/services/web-swarm"); s = json.loads(c.getresponse().read())
spec = s["Spec"]; spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = {"Test": ["CMD", "/demo-app", "check"], "Interval": 1_000_000_000, "Timeout": 2_000_000_000, "Retries": 3}
c = U("docker"); c.request("POST", f"/services/web-swarm/update?version={s['Version']['Index']}", json.dumps(spec), {"Content-Type": "application/json"}); r = c.getresponse(); body = r.read()
assert r.status == 200, (r.status, body)
PY
until [ "$(docker service ls --filter name=web-swarm --format '{{.Replicas}}')" = "3/3" ] \
  && [ "$(docker ps -q --filter name=web-swarm --filter health=healthy | wc -l)" = 3 ]; do sleep 0.5; done
declare -A SWARM_MS
for par in 1 3; do
  : > "$WORK/swarm-$par"
  for _ in $(seq "$RUNS"); do
    n=$((n + 1)); image=paz-demo:v$((2 + n % 2))
    start=$(now_ms)
    docker service update -q --no-resolve-image --update-order start-first --update-parallelism "$par" --image "$image" web-swarm >/dev/null
    echo $(( $(now_ms) - start )) >> "$WORK/swarm-$par"
  done
  SWARM_MS[$par]=$(median < "$WORK/swarm-$par")
  echo "   parallelism $par: ${SWARM_MS[$par]} ms (runs: $(tr '\n' ' ' < "$WORK/swarm-$par"))"
done

echo
echo "== results (medians of $RUNS runs)"
python3 - "${FLOOR[1]}" "${FLOOR[3]}" "${PAZ_MS[1]}" "${PAZ_MS[3]}" "${SWARM_MS[1]}" "${SWARM_MS[3]}" <<'PY'
import sys
f1, f3, p1, p3, s1, s3 = map(float, sys.argv[1:])
print(f"   max_surge/parallelism 1 (3 batches of 1): Paz {p1:.0f} ms = {p1/(3*f1):.2f}x floor (3 x {f1:.0f} ms), {p1/s1:.2f}x Swarm ({s1:.0f} ms)")
print(f"   max_surge/parallelism 3 (1 batch of 3):   Paz {p3:.0f} ms = {p3/f3:.2f}x floor ({f3:.0f} ms), {p3/s3:.2f}x Swarm ({s3:.0f} ms)")
PY
