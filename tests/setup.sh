#!/bin/sh
# Installs the test-only dependencies on a fresh machine of the project's image (Debian 12, as root).
# Idempotent: each section installs only what is missing. One section per dependency group.
set -eu

# smtp interop: Python's aiosmtpd (tests/util/aiosmtpd_server.py) and a private Exim (tests/util/servers.rs).
# Debian's exim4 packages conflict with postfix (both are the mail-transport-agent), so Exim is unpacked
# into /opt/smime-pickup-tests/exim4, not installed; it needs its libraries and its Debian-exim user.
python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install --quiet aiosmtpd || python3 -m pip install --quiet --break-system-packages aiosmtpd
if [ ! -x /opt/smime-pickup-tests/exim4/usr/sbin/exim4 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libidn12 libgnutls-dane0 libnsl2 libpcre2-8-0 libdb5.3 >/dev/null
  tmp=$(mktemp -d) && (cd "$tmp" && apt-get download -qq exim4-daemon-light) && mkdir -p /opt/smime-pickup-tests/exim4 &&
    dpkg-deb -x "$tmp"/exim4-daemon-light_*.deb /opt/smime-pickup-tests/exim4 && rm -rf "$tmp"
fi
getent passwd Debian-exim >/dev/null || adduser --system --group --quiet --allow-bad-names --no-create-home --home /nonexistent Debian-exim
