#!/usr/bin/env bash
# Build the spheroid container image with podman from a Debian base made here: no image registry.
#
#   containers/build.sh                       # CPU image  localhost/spheroid:VERSION-cpu
#   containers/build.sh --variant cuda        # CUDA torch (needs TORCH_INDEX reachable, see below)
#   containers/build.sh --force               # rebuild even when the inputs are unchanged
#   containers/build.sh --print-tag           # the tag it would build, nothing else
#   containers/build.sh --check               # exit 0 if that image exists and is up to date, else 1
#   containers/build.sh --lock                # rewrite containers/requirements.txt (pinned set)
#
# 1. The base, localhost/spheroid-base:bookworm-<hash>, is made once with debootstrap (Debian
#    bookworm minbase + python3.11 + venv, no compilers) from this machine's apt mirror and kept
#    in podman's storage; it is made again only when its definition below changes.
# 2. The image is built from containers/Containerfile on that base. Python packages come from where
#    pip on this machine takes them (`pip config list`): its local indexes, wheel folders, constraints
#    and CA bundle are bind-mounted into the build steps (podman build --volume), with pip's cache,
#    and never copied into a layer. Versions are pinned by containers/requirements.txt (torch
#    separately, by the TORCH build argument).
# 3. The image carries a label, org.spheroid.inputs, hashing everything it is built from (the files
#    copied in, the lock, the build arguments, the base). When an image with the same tag and label
#    exists the build is skipped (a second or so), so CI pays for it only when something changed.
#
# Environment: SPHEROID_IMAGE (tag), CONTAINERS_CONF (default containers/containers.conf: runc and
# lower ulimits), DEBIAN_MIRROR (default: the first deb.debian.org-like URI apt uses here),
# TORCH_INDEX (CUDA variant: an index holding torch's CUDA wheels, default PyTorch's cu126 index).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

VARIANT=cpu
FORCE=0
ACTION=build
while (($#)); do
    case $1 in
        --variant) VARIANT=${2:?--variant cpu|cuda}; shift 2 ;;
        --variant=*) VARIANT=${1#*=}; shift ;;
        --force) FORCE=1; shift ;;
        --print-tag) ACTION=print-tag; shift ;;
        --check) ACTION=check; shift ;;
        --lock) ACTION=lock; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $VARIANT == cpu || $VARIANT == cuda ]] || { echo "build.sh: --variant must be cpu or cuda" >&2; exit 2; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1)
TAG=${SPHEROID_IMAGE:-localhost/spheroid:$VERSION-$VARIANT}
TORCH=2.13.0
EXTRAS=slurm,s3,nd2
if [[ $VARIANT == cuda ]]; then TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu126}; else TORCH_INDEX=; fi

if [[ $ACTION == print-tag ]]; then echo "$TAG"; exit 0; fi

log() { echo "build.sh: $*" >&2; }

# ---------------------------------------------------------------- pip configuration of this machine
# The build installs from what pip here installs from (`pip config list`): the same indexes, wheel
# folders, constraints and CA bundle. Folders and files among them are mounted read-only at the
# same paths inside the build steps, with a pip.conf naming them at /run/pip/pip.conf, and pip's
# cache is a folder of this machine mounted at /run/pip-cache: none of it enters a layer. (Here the
# local indexes hold only part of the packages, e.g. no zarr: the rest comes from the package
# registry pip is configured with, PyPI by default; no image registry is used.)
PIP_CONFIG=$(pip config list 2>/dev/null || true)
pip_setting() { sed -n "s/^[a-z:_.]*\.$1='\(.*\)'$/\1/p" <<<"$PIP_CONFIG" | tail -1; }
PIPDIR=$(mktemp -d)
trap 'rm -rf "$PIPDIR"' EXIT
PIP_CACHE=${SPHEROID_PIP_CACHE:-/var/cache/spheroid-build/pip}
mkdir -p "$PIP_CACHE"
MOUNTS=(--volume "$PIPDIR:/run/pip:ro" --volume "$PIP_CACHE:/run/pip-cache:rw")
n_mounts=0
in_build() {  # mount folder $1 of this machine at REPLY=/run/pip/mN inside the build steps
    REPLY=/run/pip/m$((n_mounts++))
    mkdir -p "$PIPDIR/${REPLY#/run/pip/}"
    MOUNTS+=(--volume "$1:$REPLY:ro")
}
build_url() {  # REPLY=the URL of index $1 inside the build steps (mounted when it is a local folder;
               # a simple index's pages link to ../../files: the folder above it is mounted)
    local path=${1#file://}
    if [[ $1 != file://* || ! -d $path ]]; then REPLY=$1
    elif [[ $(basename "$path") == simple ]]; then in_build "$(dirname "$path")"; REPLY=file://$REPLY/simple
    else in_build "$path"; REPLY=file://$REPLY
    fi
}
index_url=
extra_urls=()
links=()
setting=$(pip_setting index-url)
if [[ -n $setting ]]; then build_url "$setting"; index_url=$REPLY; fi
for url in $(pip_setting extra-index-url); do build_url "$url"; extra_urls+=("$REPLY"); done
for path in $(pip_setting find-links); do
    if [[ -d $path ]]; then in_build "$path"; links+=("$REPLY"); else links+=("$path"); fi
done
{
    echo "[global]"
    echo "cache-dir = /run/pip-cache"
    echo "disable-pip-version-check = true"
    echo "progress-bar = off"
    if [[ -n $index_url ]]; then echo "index-url = $index_url"; fi
    if ((${#extra_urls[@]})); then echo "extra-index-url = ${extra_urls[*]}"; fi
    if ((${#links[@]})); then echo "find-links = ${links[*]}"; fi
    constraint=$(pip_setting constraint)
    if [[ -n $constraint && -f $constraint ]]; then
        cp "$constraint" "$PIPDIR/host-constraints.txt"
        echo "constraint = /run/pip/host-constraints.txt"
    fi
    cert=$(pip_setting cert)
    if [[ -n $cert && -f $cert ]]; then
        cp "$cert" "$PIPDIR/host-ca.crt"
        echo "cert = /run/pip/host-ca.crt"
    fi
} >"$PIPDIR/pip.conf"
chmod -R a+rX "$PIPDIR"
[[ -n ${SPHEROID_BUILD_DEBUG:-} ]] && { cat "$PIPDIR/pip.conf" >&2; printf '%s\n' "${MOUNTS[@]}" >&2; }

# ---------------------------------------------------------------- the pinned package set
if [[ $ACTION == lock ]]; then
    # Resolve what the image installs (torch aside) with this machine's pip settings, and pin it all.
    report=$PIPDIR/report.json
    python3.11 -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: \
        --report "$report" "torch==$TORCH" "$REPO[$EXTRAS]"
    python3.11 - "$report" "$HERE/requirements.txt" "$TORCH" "$EXTRAS" <<'PY'
import json, sys
report, out, torch, extras = sys.argv[1:]
pins = sorted(
    (item["metadata"]["name"].lower().replace("_", "-"), item["metadata"]["version"])
    for item in json.load(open(report))["install"]
    if item["metadata"]["name"].lower().replace("_", "-") not in ("spheroid", "torch")
)
with open(out, "w") as fh:
    fh.write("# Every package of the spheroid image but torch (pinned by the TORCH build argument) and\n")
    fh.write(f"# spheroid itself: the resolution of torch=={torch} and spheroid[{extras}] on Python 3.11.\n")
    fh.write("# Written by `containers/build.sh --lock`; edit pyproject.toml, then run it again.\n")
    for name, ver in pins:
        fh.write(f"{name}=={ver}\n")
print(f"{out}: {len(pins)} packages pinned")
PY
    exit 0
fi

command -v podman >/dev/null || { log "podman is not installed (apt-get install podman buildah runc)"; exit 1; }

# ---------------------------------------------------------------- the base image
BASE_SUITE=bookworm
BASE_PACKAGES="python3.11 python3.11-venv libgomp1 ca-certificates"
BASE_DEF="debootstrap --variant=minbase $BASE_SUITE; apt-get install --no-install-recommends $BASE_PACKAGES (main, updates, security); cleaned: apt lists, caches, docs, man pages, locales; v1"
BASE_HASH=$(printf '%s' "$BASE_DEF" | sha256sum | cut -c1-12)
BASE=localhost/spheroid-base:$BASE_SUITE-$BASE_HASH

make_base() {
    [[ $(id -u) -eq 0 ]] || { log "making the base image needs root (debootstrap)"; exit 1; }
    command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
    local mirror=${DEBIAN_MIRROR:-}
    if [[ -z $mirror ]]; then
        mirror=$(grep -rhoE '(URIs:|^deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $2}' | head -1 || true)
        mirror=${mirror:-http://deb.debian.org/debian}
    fi
    local root
    root=$(mktemp -d /var/tmp/spheroid-base.XXXXXX)
    log "making $BASE with debootstrap from $mirror (once; about two minutes)"
    # minbase first, then apt inside it: apt resolves dependencies that debootstrap's --include does not
    # (python3.11-venv needs python3.11-distutils, which only python3-distutils provides)
    if ! { debootstrap --variant=minbase "$BASE_SUITE" "$root" "$mirror" \
        && cp /etc/resolv.conf "$root/etc/resolv.conf" \
        && printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s-security %s-security main\n' \
            "$mirror" "$BASE_SUITE" "$mirror" "$BASE_SUITE" "${mirror%/debian*}/debian" "$BASE_SUITE" >"$root/etc/apt/sources.list" \
        && chroot "$root" apt-get update -q \
        && chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $BASE_PACKAGES \
        && chroot "$root" apt-get clean; } >"$root.log" 2>&1; then
        tail -20 "$root.log" >&2
        rm -rf "$root" "$root.log"
        exit 1
    fi
    rm -f "$root.log" "$root/etc/resolv.conf"
    chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' >"$root/etc/spheroid-base-packages.txt"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
    tar -C "$root" --numeric-owner -c . | podman import \
        --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
        --message "$BASE_DEF" - "$BASE" >/dev/null
    rm -rf "$root"
    log "base $BASE: $(podman image inspect --format '{{.Size}}' "$BASE" | awk '{printf "%.0f MB", $1/1e6}')"
}
if ! podman image exists "$BASE"; then
    [[ $ACTION == check ]] && { log "no base image $BASE yet"; exit 1; }
    make_base
fi

# ---------------------------------------------------------------- the build context and its hash
CTX=$(mktemp -d)
trap 'rm -rf "$CTX" "$PIPDIR"' EXIT
cp "$REPO/pyproject.toml" "$REPO/README.md" "$HERE/Containerfile" "$HERE/requirements.txt" "$CTX/"
(cd "$REPO" && tar --exclude=__pycache__ --exclude='*.pyc' -c pipeline configs) | tar -C "$CTX" -x
BASE_ID=$(podman image inspect --format '{{.Id}}' "$BASE")
ARGS=(--build-arg "BASE=$BASE" --build-arg "VARIANT=$VARIANT" --build-arg "TORCH=$TORCH"
      --build-arg "TORCH_INDEX=$TORCH_INDEX" --build-arg "EXTRAS=$EXTRAS")
INPUTS=$( { (cd "$CTX" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); printf '%s\n' "$BASE_ID" "${ARGS[@]}"; } | sha256sum | cut -c1-16)

if [[ $FORCE -eq 0 ]] && podman image exists "$TAG" \
    && [[ $(podman image inspect --format '{{ index .Labels "org.spheroid.inputs" }}' "$TAG") == "$INPUTS" ]]; then
    log "$TAG is up to date (inputs $INPUTS); nothing to build"
    exit 0
fi
if [[ $ACTION == check ]]; then
    log "$TAG is missing or was built from other inputs than these ($INPUTS): run containers/build.sh"
    exit 1
fi

log "building $TAG (inputs $INPUTS) on $BASE"
start=$(date +%s)
podman build --layers --pull=never "${MOUNTS[@]}" "${ARGS[@]}" --build-arg "SOURCE=$INPUTS" \
    --label "org.spheroid.inputs=$INPUTS" --label "org.opencontainers.image.version=$VERSION" \
    -f "$CTX/Containerfile" -t "$TAG" "$CTX"
# the package in the image must be the one in the context (a stale cached layer would not be)
HASH_PY='import hashlib, pathlib, sys
root = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__import__("pipeline").__file__).parent
print(hashlib.sha256(b"".join(str(p.relative_to(root)).encode() + p.read_bytes() for p in sorted(root.rglob("*.py")))).hexdigest())'
inside=$(podman run --rm --network none --entrypoint python "$TAG" -c "$HASH_PY")
if [[ $inside != "$(python3 -c "$HASH_PY" "$CTX/pipeline")" ]]; then
    log "the image's pipeline package differs from the source it was built from (a stale layer?); rebuild with --force"
    podman rmi "$TAG" >/dev/null 2>&1 || true
    exit 1
fi
size=$(podman image inspect --format '{{.Size}}' "$TAG")
log "built $TAG in $(( $(date +%s) - start )) s; image size $(awk -v s="$size" 'BEGIN {printf "%.0f MB", s/1e6}')"
# dangling layers of earlier builds of this tag
podman image prune -f --filter "label=org.opencontainers.image.title=spheroid" >/dev/null 2>&1 || true
