#!/usr/bin/env bash
# Copies the kernel modules the image carries, and every module they depend
# on, from an unpacked Debian kernel package into the image's root. Modules
# are copied byte for byte: they are signed, so never stripped.
#
#   image/modules.sh SRC_MODULES_DIR DEST_MODULES_DIR LIST_FILE [GPU_DRIVER...]
set -Eeuo pipefail
trap 'printf "%s: error: line %s: %s failed (status %s)\n" "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR
die() { printf 'image/modules.sh: error: %s\n' "$*" >&2; exit 1; }
[[ $# -ge 3 ]] || die "usage: $0 SRC_MODULES_DIR DEST_MODULES_DIR LIST_FILE [GPU_DRIVER...]"
src=$1 dest=$2 list=$3
shift 3
[[ -s $src/modules.dep ]] || die "$src has no modules.dep"
mkdir -p "$dest"
# name (dashes and underscores alike) -> path in modules.dep
declare -A path_of=()
while IFS=: read -r rel _; do
    name=$(basename "$rel" .ko)
    path_of[${name//-/_}]=$rel
done <"$src/modules.dep"
declare -A deps_of=()
while IFS=: read -r rel deps; do
    deps_of[$rel]=$deps
done <"$src/modules.dep"
declare -A copied=()
add() {  # path in modules.dep
    local rel=$1 dep
    [[ -n ${copied[$rel]:-} ]] && return
    copied[$rel]=1
    for dep in ${deps_of[$rel]}; do add "$dep"; done
    install -D -m 0644 "$src/$rel" "$dest/$rel"
}
names=$(grep -v '^\s*#' "$list" | tr ' ' '\n' | awk 'NF')
for name in $names "$@"; do
    key=${name//-/_}
    rel=${path_of[$key]:-}
    if [[ -z $rel ]]; then
        # Built into the kernel is as good as a module.
        grep -q "/${name}.ko\$\|/${key}.ko\$" "$src/modules.builtin" 2>/dev/null && continue
        die "the kernel has no module '$name' (image/modules or --gpu names it)"
    fi
    add "$rel"
done
cp "$src"/modules.builtin* "$src"/modules.order "$dest/" 2>/dev/null || true
echo "image/modules.sh: ${#copied[@]} modules" >&2
