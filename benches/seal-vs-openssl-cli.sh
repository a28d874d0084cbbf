#!/usr/bin/env bash
# One run, same input, same machine: `smime-pickup seal` as a process per message versus the
# `openssl smime -sign | openssl smime -encrypt` pipeline per message (the baseline users replace).
# Both sign with alice's key and encrypt for bob (AES-256-CBC). Prints messages/s and the ratio.
#
# Usage: bash benches/seal-vs-openssl-cli.sh [N] [FIXTURE]     (defaults: 200, html-19k.eml)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
fixture=fixtures/eml/${2:-html-19k.eml}
cargo build --release -q
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r fixtures/pki "$work/pki"; chmod 600 "$work"/pki/keys/*
bin=target/release/smime-pickup
pki=$work/pki

now() { date +%s.%N; }

t0=$(now)
for _ in $(seq "$n"); do
  openssl smime -sign -signer "$pki/private/alice@example.com.crt" -inkey "$pki/private/alice@example.com.key" \
      -in "$fixture" \
    | openssl smime -encrypt -aes256 "$pki/certs/bob@example.com.crt" > "$work/baseline.eml"
done
t1=$(now)
for _ in $(seq "$n"); do
  "$bin" seal --keys "$pki/keys" --certs "$pki/certs" --ca "$pki/ca.pem" "$fixture" > "$work/ours.eml"
done
t2=$(now)

awk -v n="$n" -v b="$(echo "$t1 - $t0" | bc)" -v o="$(echo "$t2 - $t1" | bc)" -v f="$fixture" 'BEGIN {
  printf "%s, %d messages, one process per message, sequential\n", f, n
  printf "openssl smime -sign | openssl smime -encrypt : %7.1f msg/s (%.2f ms each)\n", n / b, 1000 * b / n
  printf "smime-pickup seal                            : %7.1f msg/s (%.2f ms each)\n", n / o, 1000 * o / n
  printf "ratio (ours / baseline)                      : %7.2fx\n", b / o
}'
