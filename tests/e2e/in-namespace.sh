#!/usr/bin/env bash
# Runs the end-to-end test binary as root in private namespaces, so that real useradd, real
# bind mounts and a real sshd never touch the developer's machine:
#   - mount namespace (propagation private): a private COPY of the whole /etc (cp -a into a tmpfs)
#     bind-mounted over /etc (not single files: useradd renames over /etc/passwd), tmpfs over
#     /home, /srv, /run (with /run/sshd) and /var/log (lastlog/faillog/btmp that useradd and
#     sshd write);
#   - network namespace with only the loopback interface up (when `ip` is available);
#   - PID namespace: every process the tests start (sshd, ssh, the agent) ends with it.
# Each test case runs in its own fresh namespaces (a fresh /etc, no users, mounts or state left
# by an earlier case): the test cases are listed with --list-test-names-only and the binary is
# run once per case with PIM_E2E_TEST=<name>; PIM_E2E_REQUIRE_NAMESPACE() lets only that case
# run. PIM_E2E_SHARED=1 runs everything in one namespace instead (faster; cases then share state).
# The only thing made on the real machine is an empty mount-point directory under /tmp, removed
# on exit.
#
# Usage: in-namespace.sh <e2e_tests binary> [catch2 args...]
#        e.g. in-namespace.sh build/tests/e2e_tests "[harness]" --order decl
# Exit: 0 when every case passed; 1 (or the binary's code) when one failed; 77 (skipped, for
# ctest) when not root or a tool is missing.
set -euo pipefail

if [[ "${1:-}" == "--inside" ]]; then
  # Second stage, inside the namespaces: $2 = mount-point dir, $3 = 1 when the network is private.
  stage="$2"
  privnet="$3"
  shift 3
  mount --make-rprivate /
  mount -t tmpfs -o mode=755 pim-e2e-etc "$stage"
  cp -a /etc/. "$stage/"
  mount --bind "$stage" /etc
  for dir in /home /srv /run /var/log; do
    mount -t tmpfs -o mode=755 pim-e2e "$dir"
  done
  mkdir -m 0755 /run/sshd
  mkdir -m 1777 /run/pim-e2e-tmp
  if [[ "$privnet" == 1 ]]; then
    ip link set lo up
  fi
  export PIM_E2E_NAMESPACE=1 TMPDIR=/run/pim-e2e-tmp
  # Not exec: bash stays PID 1 of the namespace and reaps orphaned processes.
  set +e
  "$@"
  exit $?
fi

if [[ $# -lt 1 ]]; then
  echo "usage: $0 <e2e_tests binary> [catch2 args...]" >&2
  exit 2
fi

if [[ "$(id -u)" != 0 ]]; then
  echo "e2e: skipped: needs root (real useradd, mounts and sshd inside a private namespace); run as root or in CI"
  exit 77
fi
for tool in unshare mount /usr/sbin/sshd ssh sftp ssh-keygen sshpass useradd chpasswd; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "e2e: skipped: $tool is not installed (apt-get install openssh-server openssh-client sshpass passwd util-linux)"
    exit 77
  fi
done

binary="$1"
shift
if [[ "$binary" == */* ]]; then
  binary="$(readlink -f "$binary")"
fi
self="$(readlink -f "${BASH_SOURCE[0]}")"

stage="$(mktemp -d /tmp/pim-e2e.XXXXXX)"
cleanup() { rmdir "$stage" 2>/dev/null || rm -rf --one-file-system "$stage"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

netflag=()
privnet=0
if command -v ip >/dev/null 2>&1; then
  netflag=(--net)
  privnet=1
else
  echo "e2e: note: 'ip' not found; sharing the host's network namespace (tests bind to 127.0.0.x only)" >&2
fi

in_namespace() {
  unshare --mount --propagation private --pid --fork --mount-proc "${netflag[@]}" \
    "$self" --inside "$stage" "$privnet" "$@"
}

if [[ "${PIM_E2E_SHARED:-0}" == 1 ]]; then
  set +e
  in_namespace "$binary" "$@"
  exit $?
fi

mapfile -t cases < <("$binary" --list-test-names-only "$@" | sed -e '/^[[:space:]]*$/d')
if [[ ${#cases[@]} -eq 0 ]]; then
  echo "e2e: no test case matches: $*" >&2
  exit 1
fi

rc=0
failed=()
for name in "${cases[@]}"; do
  echo "=== e2e: $name"
  set +e
  PIM_E2E_TEST="$name" in_namespace "$binary" "$@"
  one=$?
  set -e
  if [[ $one -ne 0 ]]; then
    failed+=("$name (exit $one)")
    [[ $rc -eq 0 ]] && rc=$one
  fi
done

echo "=== e2e: ${#cases[@]} test cases, ${#failed[@]} failed"
for f in "${failed[@]}"; do
  echo "    FAILED: $f"
done
exit "$rc"
