# shellcheck shell=bash
# Sourced by the provisioning scripts (hypervisor-setup.sh, pxe-setup.sh,
# fetch-loaders.sh): their messages and exit codes, the Debian packages they
# install, and the files they put in place.
# Uses the caller's PROG, and its ok and changed for what was found and done.

# Errors in what was asked for: one sentence, exit 2.
bad_usage() {
  echo "$PROG: $*" >&2
  exit 2
}
# Failures while working: one sentence, exit 1.
die() {
  echo "$PROG: $*" >&2
  exit 1
}

# Installs the packages given that are missing. The lists are refreshed only
# when missing or older than a day, and once more if apt-get fails.
ensure_packages() {
  local pkg missing=()
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    ok "all $# packages are installed ($*)"
    return 0
  fi
  echo "Installing ${#missing[@]} package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -1)" ]]; then
    apt-get update -q
  fi
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    echo "$PROG: apt-get install failed; refreshing the package lists and trying once more." >&2
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}" \
      || die "apt-get could not install ${missing[*]}; see its messages above."
  fi
  changed "installed ${missing[*]}"
}

# Puts SRC at DST (mode 0644) unless DST already has the same bytes, in one
# rename, so a reader never sees half a file; says which with ok or changed
# and DESC.
install_if_changed() {
  local src=$1 dst=$2 desc=$3
  if cmp -s "$src" "$dst"; then
    ok "$dst is up to date"
  else
    install -m 0644 "$src" "$dst.aula-new"
    mv -f "$dst.aula-new" "$dst"
    changed "$desc"
  fi
}
