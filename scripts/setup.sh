#!/usr/bin/env bash
# Installs what the project builds and tests with. Idempotent: installs only what is missing,
# runs `apt-get update` once per machine, and caches the extra containerd versions.
#
# 1. Debian packages from the machine's own suites (bookworm).
# 2. containerd 2.1.x (Debian sid) and 1.7.x (Debian trixie), unpacked with `dpkg -x` into the
#    project's cache dir (default: target/e2e-cache, override with E2E_CACHE), never installed
#    system-wide. apt uses a private sources list, lists dir and cache dir there, so the system's
#    suites stay as they are. A version that cannot be fetched is reported and skipped; the
#    end-to-end tests that need it then skip with a message saying so.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

# --- the Rust toolchain ---------------------------------------------------------------------
# The build needs rustc and cargo at least as new as the workspace's rust-version (Cargo.toml:
# the highest one among Cargo.lock's dependencies). Debian 12's own rustc (1.63) is older.
need_rust="$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' "$repo/Cargo.toml")"
have_rust="$(rustc --version 2>/dev/null | awk '{print $2}' || true)"
if [ -z "$have_rust" ] || ! command -v cargo >/dev/null ||
    [ "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -n 1)" != "$need_rust" ]; then
    found="no rustc on PATH"
    [ -z "$have_rust" ] || found="rustc $have_rust"
    echo "setup: building needs Rust $need_rust or newer (rustc and cargo); found $found." \
        "Install it with rustup (https://rustup.rs), e.g. as the user who builds:" \
        "'rustup toolchain install stable && rustup default stable', then open a new shell" \
        "so ~/.cargo/bin is on PATH. Debian 12's rustc package is too old." >&2
    exit 1
fi

packages=(
    lxc                       # lxc-start, lxc-attach, lxc-monitord: the plain LXC driver
    containerd runc           # containerd 1.6 and runc, the reference runtime
    busybox-static            # rootfs for test containers and the demo image
    containernetworking-plugins # CNI plugins for the CRI tests
    protobuf-compiler         # protoc, for CRI client bindings
    docker-registry           # local OCI registry the CRI tests push to and pull from
    iproute2 procps util-linux psmisc
    gpgv debian-archive-keyring # to verify the sid/trixie indexes fetched below
    dpkg-dev                  # dpkg-shlibdeps, for the package cargo-deb builds (packaging/)
)
# A Proxmox VE node has LXC as lxc-pve, which conflicts with Debian's lxc: never ask for that.
if dpkg-query -W -f='${Status}' lxc-pve 2>/dev/null | grep -q "install ok installed"; then
    kept=()
    for p in "${packages[@]}"; do
        [ "$p" = lxc ] || kept+=("$p")
    done
    packages=("${kept[@]}")
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    stamp=/var/lib/apt/periodic/.containerd-shim-proxmox-lxc-updated
    if [ ! -e "$stamp" ]; then
        apt-get update -q
        mkdir -p "$(dirname "$stamp")" && touch "$stamp"
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- the node twin's tools (scripts/twin/): QEMU and mmdebstrap ----------------------------
# Installed from the host's suite; where that fails (e.g. a newer qemu-utils from backports is
# already installed and breaks the suite's qemu-system-common), from the suite's backports,
# through a private sources list on the host's mirror so the system's suites stay as they are.
# TWIN=skip skips this (and the twin stage in scripts/test.sh).
if [ "${TWIN:-}" != skip ]; then
    twin_tools=(qemu-system-x86 mmdebstrap)
    twin_missing=()
    for p in "${twin_tools[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || twin_missing+=("$p")
    done
    if [ ${#twin_missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -q --no-install-recommends "${twin_missing[@]}"; then
            codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
            bpo_dir="$repo/target/twin/apt"
            mkdir -p "$bpo_dir/lists/partial"
            mirror="$(bash "$repo/scripts/apt-mirror.sh")"
            cat >"$bpo_dir/sources.list" <<SOURCES
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $codename main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $codename-backports main
SOURCES
            bpo_opts=(
                -o "Dir::Etc::SourceList=$bpo_dir/sources.list"
                -o "Dir::Etc::SourceParts=/dev/null"
                -o "Dir::State::Lists=$bpo_dir/lists"
                -o "Acquire::Languages=none"
                -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
            )
            apt-get -q "${bpo_opts[@]}" update >"$bpo_dir/update.log" 2>&1 &&
                apt-get -q "${bpo_opts[@]}" install -y --no-install-recommends \
                    -t "$codename-backports" "${twin_missing[@]}" ||
                echo "setup: could not install ${twin_missing[*]}; the twin stage will fail (TWIN=skip skips it)" >&2
        fi
    fi
fi

# --- extra containerd versions, unpacked into the project's cache --------------------------
cache="${E2E_CACHE:-$repo/target/e2e-cache}"
apt_dir="$cache/apt"
# name:suite pairs; the name is the directory the tests look for ("containerd-2.1").
versions=("containerd-2.1:sid" "containerd-1.7:trixie")
need_fetch=0
for v in "${versions[@]}"; do
    [ -x "$cache/${v%%:*}/usr/bin/containerd" ] || need_fetch=1
done
if [ "$need_fetch" = 1 ]; then
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    # The same mirror the host's own apt sources use (no archive host name in the repository).
    mirror="$(bash "$repo/scripts/apt-mirror.sh")"
    cat >"$apt_dir/sources.list" <<SOURCES
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main
SOURCES
    apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
        -o "Acquire::Languages=none"
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
        -o "APT::Get::List-Cleanup=0"
    )
    if apt-get -q "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1; then
        for v in "${versions[@]}"; do
            name="${v%%:*}" suite="${v##*:}"
            dest="$cache/$name"
            [ -x "$dest/usr/bin/containerd" ] && continue
            rm -f "$apt_dir/debs"/containerd_*.deb
            if (cd "$apt_dir/debs" && apt-get -q "${apt_opts[@]}" download "containerd/$suite") \
                >>"$apt_dir/download.log" 2>&1; then
                rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
                dpkg -x "$apt_dir/debs"/containerd_*.deb "$dest.tmp"
                dpkg-deb -f "$apt_dir/debs"/containerd_*.deb Version >"$dest.tmp/VERSION"
                rm -rf "$dest" && mv "$dest.tmp" "$dest"
                echo "setup: $name $(cat "$dest/VERSION") unpacked into $dest"
            else
                echo "setup: could not download containerd from $suite (see $apt_dir/download.log);" \
                    "tests that need $name will skip" >&2
            fi
        done
    else
        echo "setup: apt-get update for sid/trixie failed (see $apt_dir/update.log);" \
            "tests that need containerd 1.7/2.x will skip" >&2
    fi
fi
# The sid/trixie indexes (~300 MB) are only needed to fetch; drop them once everything is here.
all_here=1
for v in "${versions[@]}"; do
    [ -x "$cache/${v%%:*}/usr/bin/containerd" ] || all_here=0
done
if [ "$all_here" = 1 ] && [ -d "$apt_dir" ]; then
    rm -rf "$apt_dir/lists" "$apt_dir/cache" "$apt_dir/debs"
fi
for v in "${versions[@]}"; do
    name="${v%%:*}"
    if [ -x "$cache/$name/usr/bin/containerd" ]; then
        echo "setup: $name $(cat "$cache/$name/VERSION" 2>/dev/null) in $cache/$name"
    fi
done

# Subordinate ids for root, as on every Proxmox VE node: LXC maps an unprivileged container's
# ids (lxc.idmap = u 0 100000 65536) through newuidmap/newgidmap, which check these files.
for f in /etc/subuid /etc/subgid; do
    if ! grep -q '^root:100000:65536$' "$f" 2>/dev/null; then
        if [ "$(id -u)" = 0 ]; then
            echo 'root:100000:65536' >>"$f"
            echo "setup: added root:100000:65536 to $f (unprivileged containers)"
        else
            echo "setup: $f lacks root:100000:65536; unprivileged-container tests will skip" >&2
        fi
    fi
done
