#!/usr/bin/env bash
# End-to-end benchmark, one run, one generated corpus, everything side by side:
#   0. the crypto floor on every core (benches/floor.rs): RSA-2048 signatures alone, the bare OpenSSL
#      sign + encrypt of the same 19 KB message, and our in-memory seal
#   1. drain N x 19 KB (and M x 577 KB) from spool to pickup with `once`, durable writes on; on the
#      project's disk, on tmpfs (/dev/shm: the pipeline's own cost, no device), and again on a
#      journalled ext4 image when one can be mounted (root, loop); each as a share of the system
#      openssl's all-core RSA-2048 signature rate measured in part 0
#   2. the baseline: `openssl smime -sign | openssl smime -encrypt` per message, one per core in
#      parallel, over a sample of the same files; the ratios ours / baseline and ours / floor
#   3. drop-to-pickup latency (p50, p99) with the daemon running and files arriving at 200/s
#   4. peak RSS draining N files, and with a 100,000-file backlog at start (+ time to first delivery)
#   5. SMTP to a local smtp-sink: delivery alone (benches/smtp.rs, pre-sealed), and seal + SMTP with
#      `once`; one reused connection per worker versus one connection per message
#   6. the sync strategies A/B (`sync = "file"` / `"filesystem"`), interleaved, SYNC_ROUNDS rounds of
#      SYNC_N x 19 KB on each disk (only with ONLY=sync: not part of the default run)
# Usage: bash benches/e2e.sh [N] [M] [BACKLOG]        (defaults 10000 1000 100000)
#        ONLY="floor drain" bash benches/e2e.sh ...   runs only the named parts
#        (floor drain baseline latency backlog smtp; and sync)
# Needs: openssl, python3, bc, /usr/bin/time, smtp-sink (postfix package); for the journalled image
# also root, mkfs.ext4 and a loop device. Work files go to target/e2e-bench on the project's own
# disk (so fsync is real), removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}; M=${2:-1000}; BACKLOG=${3:-100000}
ONLY=${ONLY:-floor drain baseline latency backlog smtp}
want() { [[ " $ONLY " == *" $1 "* ]]; }
cargo build --release -q
cargo bench --no-run -q --bench floor --bench smtp 2>/dev/null
BIN=${BIN:-$PWD/target/release/smime-pickup}
W=$PWD/target/e2e-bench
IMG=$PWD/target/e2e-ext4.img
J=$W/journalled
SHM=/dev/shm/smime-pickup-e2e-$$
cleanup() {
  [ -n "${SINK:-}" ] && kill "$SINK" 2>/dev/null # ours only, by PID (others may run a sink too)
  mountpoint -q "$J" 2>/dev/null && umount "$J"
  rm -rf "$W" "$IMG" "$SHM"
}
trap cleanup EXIT
cleanup
mkdir -p "$W"
cp -r fixtures/pki "$W/pki"; chmod 600 "$W"/pki/keys/*
cores=$(nproc)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(openssl version)"
fs_of() { # the filesystem under $1 and whether ext4 there has a journal
  local dev; dev=$(df --output=source "$1" | tail -1)
  local type; type=$(df --output=fstype "$1" | tail -1 | xargs)
  local journal=""
  [ "$type" = ext4 ] && { ls /proc/fs/jbd2 2>/dev/null | grep -q "^$(basename "$dev")" && journal=", journalled" || journal=", no journal"; }
  echo "$type on $dev$journal"
}
echo "project disk: $(fs_of "$W")"

config() { # config DIR [extra toml]
  mkdir -p "$1/spool" "$1/pickup"
  printf 'spool = "spool"\npickup = "pickup"\nfailed = "failed"\nkeys = "%s/pki/keys"\ncerts = "%s/pki/certs"\nca = "%s/pki/ca.pem"\npickup_max_backlog = 10000000\nsettle_ms = 200\n%s\n' \
    "$W" "$W" "$W" "${2:-}" > "$1/c.toml"
}

gen() { # gen DIR COUNT FIXTURE: COUNT copies of FIXTURE to bob with unique Message-IDs
  python3 - "$1" "$2" "$3" <<'PY'
import os, sys
d, n, fx = sys.argv[1], int(sys.argv[2]), sys.argv[3]
raw = open(fx, 'rb').read()
head, body = raw.split(b'\n\n', 1)
keep = [l for l in head.split(b'\n') if not l.lower().startswith((b'to:', b'cc:', b'bcc:', b'message-id:'))]
os.makedirs(d, exist_ok=True)
for i in range(n):
    h = b'\n'.join(keep) + b'\nTo: bob@example.com\nMessage-ID: <bench-%d@example.com>\n\n' % i
    tmp = os.path.join(d, '.t%d' % i)
    with open(tmp, 'wb') as f:
        f.write(h + body)
    os.rename(tmp, os.path.join(d, 'm%06d.eml' % i))
PY
}

now() { date +%s.%N; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f %%", 100 * a / b }'; }

drain() { # drain LABEL COUNT FIXTURE [BASE] [TOML]: prints msg/s, MB/s, peak RSS; saves the rate
  local d=${4:-$W}/$1; config "$d" "${5:-}"; gen "$d/spool" "$2" "$3"; sync; sleep 0.3
  local bytes; bytes=$(du -sb "$d/spool" | cut -f1)
  local t0 t1; t0=$(now)
  (cd "$d" && RUST_LOG=warn /usr/bin/time -v "$BIN" -c c.toml once > "$d/out" 2> "$d/time")
  t1=$(now)
  local secs; secs=$(echo "$t1 - $t0" | bc)
  local rss; rss=$(awk '/Maximum resident/ {print $6}' "$d/time")
  local cpu; cpu=$(awk -F': ' '/Percent of CPU/ {print $2}' "$d/time")
  printf '%-28s %6d msgs in %6.2f s: %6s msg/s%s, CPU %s, %6.1f MB/s in, peak RSS %5.1f MB (%s)\n' \
    "$1" "$2" "$secs" "$(rate "$2" "$secs")" "$(sig_pct "$(rate "$2" "$secs")")" "$cpu" \
    "$(echo "$bytes / $secs / 1000000" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$(cat "$d/out")"
  rate "$2" "$secs" > "$W/$1.rate"
  rm -rf "$d"
}

journalled() { # mounts a journalled ext4 image at $J (once); false when this machine cannot
  mountpoint -q "$J" 2>/dev/null && return 0
  mkdir -p "$J"
  [ "$(id -u)" = 0 ] && truncate -s 6G "$IMG" && mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$IMG" 2>/dev/null &&
    mount -o loop "$IMG" "$J" 2>/dev/null && cp -r "$W/pki" "$J/pki"
}

if want floor; then
  echo; echo "== 0. crypto floor, $cores threads (benches/floor.rs) =="
  cargo bench -q --bench floor -- html-19k.eml "$cores" 5 2>/dev/null | tee "$W/floor.out" | grep -v '^floor '
  awk '/^floor / {print $2 > "'"$W"'/floor.rate"; print $3 > "'"$W"'/seal-mem.rate"}' "$W/floor.out"
  # the issue's yardstick: the system openssl's RSA-2048 signatures on every core
  openssl speed -seconds 5 -multi "$cores" rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $6}' > "$W/sig.rate"
  echo "openssl speed -multi $cores rsa2048: $(cat "$W/sig.rate") signatures/s (the signature rate below)"
fi
sig_pct() { # sig_pct RATE: the share of the signature rate, when measured in this run
  if [ -s "$W/sig.rate" ]; then echo ", $(pct "$1" "$(cat "$W/sig.rate")") of the signature rate"; fi
}

if want drain; then
  echo; echo "== 1. drain with once (durable: staged files synced, then the work and pickup folders) =="
  if [ -d /dev/shm ]; then
    echo "-- with spool and pickup on tmpfs (no device at all: what the pipeline costs beside the crypto)"
    mkdir -p "$SHM" # first: the disk drains' writeback would share the CPU with it
    drain "drain-19k-tmpfs" "$N" fixtures/eml/html-19k.eml "$SHM"
  fi
  echo "-- on the project disk ($(fs_of "$W"))"
  drain "drain-19k" "$N" fixtures/eml/html-19k.eml
  drain "drain-577k" "$M" fixtures/eml/large-577k.eml
  if journalled; then
    echo "-- on a journalled ext4 image ($(fs_of "$J"))"
    drain "drain-19k-journalled" "$N" fixtures/eml/html-19k.eml "$J"
    drain "drain-577k-journalled" "$M" fixtures/eml/large-577k.eml "$J"
  else
    echo "-- (no journalled ext4 image: needs root, mkfs.ext4 and a loop device)"
  fi
fi

if want baseline; then
  echo; echo "== 2. baseline: openssl smime -sign | openssl smime -encrypt, $cores in parallel =="
  S=$W/baseline; mkdir -p "$S/out"; gen "$S/in" 400 fixtures/eml/html-19k.eml
  t0=$(now)
  ls "$S/in" | xargs -P "$cores" -I{} sh -c \
    "openssl smime -sign -signer $W/pki/private/alice@example.com.crt -inkey $W/pki/private/alice@example.com.key -in $S/in/{} | openssl smime -encrypt -aes256 -out $S/out/{} $W/pki/certs/bob@example.com.crt"
  t1=$(now)
  base=$(rate 400 "$(echo "$t1 - $t0" | bc)")
  printf '%-34s %6s msg/s\n' "openssl pipeline (19 KB)" "$base"
  for r in floor seal-mem drain-19k drain-19k-tmpfs drain-19k-journalled; do
    [ -f "$W/$r.rate" ] || continue
    v=$(cat "$W/$r.rate")
    line=$(printf '%-34s %6s msg/s: %5sx the openssl pipeline' "$r" "$v" "$(ratio "$v" "$base")")
    [ -f "$W/floor.rate" ] && line="$line, $(pct "$v" "$(cat "$W/floor.rate")") of the floor"
    echo "$line"
  done
fi

latency() { # latency BASE
  local L=$1/latency; config "$L"
  sync; sleep 2 # the drains' writeback is not this measurement's
  (cd "$L" && RUST_LOG=warn exec "$BIN" -c c.toml run 2> "$L/log") & local daemon=$!
  sleep 1
  python3 - "$L" fixtures/eml/html-19k.eml <<'PY'
import os, sys, time
d, fx = sys.argv[1], sys.argv[2]
raw = open(fx, 'rb').read()
head, body = raw.split(b'\n\n', 1)
keep = [l for l in head.split(b'\n') if not l.lower().startswith((b'to:', b'message-id:'))]
sent = {}
start = time.time()
for i in range(2000):
    due = start + i / 200.0
    pause = due - time.time()
    if pause > 0:
        time.sleep(pause)
    tmp = os.path.join(d, 'tmp%d' % i)
    with open(tmp, 'wb') as f:
        f.write(b'\n'.join(keep) + b'\nTo: bob@example.com\nMessage-ID: <lat-%d@example.com>\n\n' % i + body)
    sent['<lat-%d@example.com>' % i] = time.time_ns()  # just before the rename: an upper bound
    os.rename(tmp, os.path.join(d, 'spool', 'l%d.eml' % i))
deadline = time.time() + 30
while len(os.listdir(os.path.join(d, 'pickup'))) < 2000 and time.time() < deadline:
    time.sleep(0.1)
lat = []
for name in os.listdir(os.path.join(d, 'pickup')):
    p = os.path.join(d, 'pickup', name)
    with open(p, 'rb') as f:
        for line in f.read(4096).split(b'\r\n'):
            if line.startswith(b'Message-ID: '):
                mid = line[12:].decode()
                lat.append((os.stat(p).st_ctime_ns - sent[mid]) / 1e6)
                break
lat.sort()
print('delivered %d of 2000; latency p50 %.1f ms, p99 %.1f ms, max %.1f ms' % (
    len(lat), lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1]))
PY
  kill -TERM "$daemon"; wait "$daemon" || true
  rm -rf "$L"
  # what a lone message cannot avoid on this filesystem: a new file made durable, then the two
  # folder syncs of the commit protocol (the second one comes after the rename that ends the
  # measured latency, so only one counts)
  python3 - "$1" <<'PY'
import os, sys, time
d = os.path.join(sys.argv[1], 'synccost'); os.makedirs(d)
data, f_t, d_t = b'x' * 31000, [], []
for i in range(200):
    t0 = time.perf_counter()
    fd = os.open(os.path.join(d, 'f%d' % i), os.O_CREAT | os.O_WRONLY, 0o640)
    os.write(fd, data); os.fdatasync(fd); os.close(fd)
    t1 = time.perf_counter()
    dfd = os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd)
    d_t.append(time.perf_counter() - t1); f_t.append(t1 - t0)
f_t.sort(); d_t.sort()
print('                     same filesystem: new 31 KB file + fdatasync p50 %.2f ms, folder fsync p50 %.2f ms' % (f_t[100] * 1e3, d_t[100] * 1e3))
PY
  rm -rf "$1/synccost"
}

if want latency; then
  echo; echo "== 3. latency, daemon running, 200 files/s for 10 s (rename into spool -> rename into pickup) =="
  echo -n "project disk:        "; latency "$W"
  if journalled; then echo -n "journalled ext4:     "; latency "$J"; fi
fi

if want backlog; then
  echo; echo "== 4. memory with a $BACKLOG-file backlog at start (tiny messages) =="
  B=$W/backlog; config "$B"
  python3 - "$B/spool" "$BACKLOG" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, 'd%d' % (i % 50)); os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, 'm%d.eml' % i), 'w') as f:
        f.write('From: alice@example.com\nTo: bob@example.com\nSubject: %d\nMessage-ID: <b%d@x>\n\nhello\n' % (i, i))
PY
  sleep 0.3
  t0=$(date +%s%N)
  (cd "$B" && RUST_LOG=warn /usr/bin/time -v "$BIN" -c c.toml once > "$B/out" 2> "$B/time")
  first=$(python3 -c "import os,sys; d=sys.argv[1]; print(min(os.stat(os.path.join(d,f)).st_ctime_ns for f in os.listdir(d)))" "$B/pickup")
  printf 'backlog %d: %s; peak RSS %.1f MB; first delivery %.0f ms after start; %s\n' "$BACKLOG" "$(cat "$B/out")" \
    "$(echo "$(awk '/Maximum resident/ {print $6}' "$B/time") / 1024" | bc -l)" "$(echo "($first - $t0) / 1000000" | bc -l)" \
    "$(awk -F': ' '/Elapsed/ {print "elapsed " $2}' "$B/time")"
  rm -rf "$B"
fi

if want smtp; then
  echo; echo "== 5. SMTP to smtp-sink (19 KB messages, 31 KB sealed) =="
  smtp-sink $( [ "$(id -u)" = 0 ] && echo "-u nobody" ) 127.0.0.1:2727 256 & SINK=$!
  sleep 0.3
  echo "-- delivery alone (benches/smtp.rs: one sealed message sent 4,000 times, $cores threads)"
  for per in 100 1; do
    cargo bench -q --bench smtp -- 2727 4000 "$cores" "$per" 2>/dev/null | grep -v '^smtp '
  done
  echo "-- seal + SMTP with once, 2,000 messages (route = \"smtp\": $((cores * 2)) workers by default)"
  smtp_run() { # smtp_run LABEL MAX_PER_CONNECTION [WORKERS]
    local d=$W/smtp-$2-${3:-default}; config "$d" "route = \"smtp\"
${3:+workers = $3}
[smtp]
host = \"127.0.0.1\"
port = 2727
max_messages_per_connection = $2"
    gen "$d/spool" 2000 fixtures/eml/html-19k.eml; sync; sleep 0.3
    local t0 t1; t0=$(now)
    (cd "$d" && RUST_LOG=warn "$BIN" -c c.toml once > "$d/out" 2>&1) || true
    t1=$(now)
    printf '%-40s %6s msg/s (%s)\n' "$1" "$(rate 2000 "$(echo "$t1 - $t0" | bc)")" "$(tail -1 "$d/out")"
    rm -rf "$d"
  }
  smtp_run "reused connections (100 each)" 100
  smtp_run "one connection per message" 1
  smtp_run "reused, one worker per core" 100 "$cores"
  kill "$SINK" 2>/dev/null || true
fi

if want sync; then
  SYNC_N=${SYNC_N:-3000}; SYNC_ROUNDS=${SYNC_ROUNDS:-3}
  echo; echo "== 6. sync strategies, interleaved: $SYNC_ROUNDS rounds of $SYNC_N x 19 KB per strategy and disk =="
  bases=("$W"); journalled && bases+=("$J")
  for base in "${bases[@]}"; do
    echo "-- $(fs_of "$base"): sync = auto picks $(cd "$base" && mkdir -p p && printf 'pickup = "p"\nspool = "p"\nfailed = "p"\n' > a.toml &&
      "$BIN" -c a.toml check 2>/dev/null | grep -o 'sync = auto: [^(]*' | cut -d: -f2; rm -rf p a.toml)"
    for round in $(seq "$SYNC_ROUNDS"); do
      for strategy in file filesystem; do
        drain "sync-$strategy" "$SYNC_N" fixtures/eml/html-19k.eml "$base" "sync = \"$strategy\""
      done
    done
  done
fi
