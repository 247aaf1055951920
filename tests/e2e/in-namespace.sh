#!/usr/bin/env bash
# Runs the end-to-end test binary as root in private namespaces, so that real useradd, real
# bind mounts and a real sshd never touch the developer's machine:
#   - mount namespace (propagation private): a private COPY of the whole /etc (cp -a into a tmpfs)
#     bind-mounted over /etc (not single files: useradd renames over /etc/passwd), tmpfs over
#     /home, /srv, /run (with /run/sshd), /var/log (lastlog/faillog/btmp that useradd and sshd
#     write) and /tmp (sshd puts forwarded agent sockets there);
#   - the directories the tests need from the machine (the e2e binary's directory, and those
#     listed in PIM_E2E_KEEP, colon-separated: the source and build trees) are bind-mounted back
#     at their own paths when a tmpfs hides them, so the suite passes wherever the checkout lives
#     (under /tmp or /home too);
#   - network namespace with only the loopback interface up: always (the agent keeps its nftables
#     table there, never in the machine's own namespace); tests add veth pairs into client
#     namespaces of their own (tests/e2e/harness.h: ClientNetwork);
#   - PID namespace: every process the tests start (sshd, ssh, the agent) ends with it.
# Each test case runs in its own fresh namespaces (a fresh /etc and /tmp, no users, mounts or state
# left by an earlier case): the test cases are listed with --list-test-names-only and the binary
# is run once per case with PIM_E2E_TEST=<name>; PIM_E2E_REQUIRE_NAMESPACE() lets only that case
# run. PIM_E2E_SHARED=1 runs everything in one namespace instead (faster; cases then share state).
# The only thing made on the real machine is an empty mount-point directory under /tmp, removed
# on exit.
#
# Usage: in-namespace.sh <e2e_tests binary> [catch2 args...]
#        e.g. in-namespace.sh build/tests/e2e_tests "[harness]" --order decl
# Exit: 0 when every case passed; 1 (or the binary's code) when one failed; 77 (skipped, for
# ctest) when not root or a tool is missing, except with CI set, where a skip is a failure (1).
set -euo pipefail

if [[ "${1:-}" == "--inside" ]]; then
  # Second stage, inside the namespaces: $2 = mount-point dir, $3 = 1 when the network is private,
  # $4 = the directories to keep visible, colon-separated.
  stage="$2"
  privnet="$3"
  IFS=: read -r -a keep <<<"$4"
  shift 4
  hidden=(/home /srv /run /var/log /tmp)
  under_hidden() {  # is $1 at or below one of the directories that get a tmpfs?
    local h
    for h in "${hidden[@]}"; do [[ $1 == "$h" || $1 == "$h"/* ]] && return 0; done
    return 1
  }
  mount --make-rprivate /
  mount -t tmpfs -o mode=755 pim-e2e-stage "$stage"
  mkdir "$stage/etc" "$stage/keep"
  # The kept directories that a tmpfs would hide, parents first, without those inside another.
  kept=()
  while IFS= read -r dir; do
    [[ -n $dir ]] || continue
    inside=0
    for k in "${kept[@]}"; do [[ $dir == "$k"/* ]] && inside=1; done
    ((inside)) || kept+=("$dir")
  done < <(for d in "${keep[@]}"; do
             [[ -d $d ]] && d=$(readlink -f "$d") && under_hidden "$d" && echo "$d"
           done | sort -u)
  for i in "${!kept[@]}"; do
    mkdir "$stage/keep/$i"
    mount --bind "${kept[$i]}" "$stage/keep/$i"
  done
  cp -a /etc/. "$stage/etc/"
  mount --bind "$stage/etc" /etc
  for dir in /home /srv /run /var/log; do
    mount -t tmpfs -o mode=755 pim-e2e "$dir"
  done
  # The stage lives under /tmp, which is hidden next: move the kept trees to /run first.
  mkdir /run/pim-e2e-keep
  for i in "${!kept[@]}"; do
    mkdir "/run/pim-e2e-keep/$i"
    mount --move "$stage/keep/$i" "/run/pim-e2e-keep/$i"
  done
  mount -t tmpfs -o mode=1777 pim-e2e-tmp /tmp
  for i in "${!kept[@]}"; do
    mkdir -p "${kept[$i]}"
    mount --move "/run/pim-e2e-keep/$i" "${kept[$i]}"
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

# Under CI (CI set, as root) a skipped root test is a failure: it would hide what it covers.
skip() {
  if [[ -n "${CI:-}" ]]; then
    echo "e2e: FAILED: $1 (CI is set: the root tests must run)" >&2
    exit 1
  fi
  echo "e2e: skipped: $1"
  exit 77
}

if [[ $# -lt 1 ]]; then
  echo "usage: $0 <e2e_tests binary> [catch2 args...]" >&2
  exit 2
fi

if [[ "$(id -u)" != 0 ]]; then
  skip "needs root (real useradd, mounts and sshd inside a private namespace); run as root or in CI"
fi
for tool in unshare mount runuser /usr/sbin/sshd ssh sftp ssh-keygen sshpass useradd chpasswd sudo /usr/sbin/visudo ip /usr/sbin/nft; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    skip "$tool is not installed (apt-get install openssh-server openssh-client sshpass passwd util-linux sudo iproute2 nftables)"
  fi
done

binary="$1"
shift
if [[ "$binary" == */* ]]; then
  binary="$(readlink -f "$binary")"
fi
self="$(readlink -f "${BASH_SOURCE[0]}")"
keep="$(dirname "$binary"):${PIM_E2E_KEEP:-}"

stage="$(mktemp -d /tmp/pim-e2e.XXXXXX)"
cleanup() { rmdir "$stage" 2>/dev/null || rm -rf --one-file-system "$stage"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Always a private network namespace: the agent under test keeps a firewall table there.
netflag=(--net)
privnet=1

in_namespace() {
  unshare --mount --propagation private --pid --fork --mount-proc "${netflag[@]}" \
    "$self" --inside "$stage" "$privnet" "$keep" "$@"
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

echo "=== e2e: ${#cases[@]} test cases: $((${#cases[@]} - ${#failed[@]})) passed, ${#failed[@]} failed, 0 skipped"
for f in "${failed[@]}"; do
  echo "    FAILED: $f"
done
exit "$rc"
