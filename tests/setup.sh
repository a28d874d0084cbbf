#!/usr/bin/env bash
# Installs what the test suite needs besides cargo, only what is missing; safe to run again.
# The tests check our output with independent implementations and real servers on 127.0.0.1:
#   gpgsm + gpg-agent   GnuPG's S/MIME tool
#   libnss3-tools       NSS's cmsutil (Mozilla's S/MIME engine, Thunderbird's)
#   openssl             the openssl cms CLI
#   postfix, sasl2-bin, libsasl2-modules   Postfix with STARTTLS + SASL, and smtp-sink for faults
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

if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "tests/setup.sh: needs root to install: ${missing[*]}" >&2; exit 1; }
        sudo=(sudo)
    fi
    echo "tests/setup.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    # postfix's package would start a system instance: policy-rc.d on these images refuses, and the
    # tests run their own instances on free ports anyway
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
