#!/usr/bin/env bash
# Installs what the test suite needs besides cargo, only what is missing; safe to run again.
# The tests check our output with independent implementations and real servers on 127.0.0.1:
#   gpgsm + gpg-agent   GnuPG's S/MIME tool
#   libnss3-tools       NSS's cmsutil (Mozilla's S/MIME engine, Thunderbird's)
#   openssl             the openssl cms CLI
#   postfix, sasl2-bin, libsasl2-modules   Postfix with STARTTLS + SASL, and smtp-sink for faults
#   aiosmtpd (PyPI), Exim (unpacked)       more SMTP servers for the interop matrix (tests/interop.rs)
#   dnsmasq-base, dkimpy (PyPI)            a DNS server for DKIM keys and a DKIM signer (tests/dkim/)
set -euo pipefail

missing=()
need() { # need PACKAGE [COMMAND]: the package is missing when its command (or the package) is
    local pkg=$1 cmd=${2:-}
    if [ -n "$cmd" ]; then
        command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 && return 0
    else
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' && return 0
    fi
    missing+=("$pkg")
}
need gpgsm gpgsm
need gpg-agent gpg-agent
need gpgconf gpgconf
need libnss3-tools cmsutil
need openssl openssl
need postfix postfix
need sasl2-bin saslpasswd2
need libsasl2-modules
need dnsmasq-base dnsmasq # the binary only: no service, nothing listens on port 53 (tests/dkim/)

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "tests/setup.sh: needs root to install what is missing" >&2; exit 1; }
    sudo=(sudo)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "tests/setup.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    # postfix's package would start a system instance: policy-rc.d on these images refuses, and the
    # tests run their own instances on free ports anyway
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# smtp interop: Python's aiosmtpd (tests/util/aiosmtpd_server.py) and a private Exim (tests/util/servers.rs).
# Debian's exim4 packages conflict with postfix (both are the mail-transport-agent), so Exim is unpacked
# into /opt/smime-pickup-tests/exim4, not installed; it needs its libraries and its Debian-exim user.
python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install --quiet aiosmtpd ||
    python3 -m pip install --quiet --break-system-packages aiosmtpd
if [ ! -x /opt/smime-pickup-tests/exim4/usr/sbin/exim4 ]; then
    export DEBIAN_FRONTEND=noninteractive
    [ ${#missing[@]} -gt 0 ] || "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends libidn12 libgnutls-dane0 libnsl2 \
        libpcre2-8-0 libdb5.3 >/dev/null
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq exim4-daemon-light)
    "${sudo[@]}" mkdir -p /opt/smime-pickup-tests/exim4
    "${sudo[@]}" dpkg-deb -x "$tmp"/exim4-daemon-light_*.deb /opt/smime-pickup-tests/exim4
    rm -rf "$tmp"
fi
getent passwd Debian-exim >/dev/null ||
    "${sudo[@]}" adduser --system --group --quiet --allow-bad-names --no-create-home \
        --home /nonexistent Debian-exim
# DKIM: Python's dkimpy signs the replies that tests/dkim/ checks against dnsmasq (dnsmasq-base above)
python3 -c 'import dkim' 2>/dev/null || python3 -m pip install --quiet dkimpy ||
    python3 -m pip install --quiet --break-system-packages dkimpy
