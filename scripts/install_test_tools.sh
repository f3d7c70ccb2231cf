#!/usr/bin/env bash
# System tools some tests use, from Debian's packages: chromium (the report in a real
# browser) and openssh-server (the loopback `ray up` cluster). Installed only where they
# are missing and this is a root shell with apt-get; elsewhere those tests skip and say why.
set -euo pipefail
packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
[ -x /usr/sbin/sshd ] || packages+=(openssh-server)
if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_tools: not root or no apt-get: ${packages[*]} not installed; their tests will skip" >&2
    exit 0
fi
echo "install_test_tools: apt-get install ${packages[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
