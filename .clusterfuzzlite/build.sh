#!/bin/bash -eu
# SPDX-License-Identifier: MIT
# ClusterFuzzLite runs $SRC/build.sh; the build itself is shared with
# OSS-Fuzz and lives in the tree.
exec "$SRC/uqcow/fuzz/oss-fuzz/build.sh"
