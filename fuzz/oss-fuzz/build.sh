#!/bin/bash -eu
# SPDX-License-Identifier: MIT
# OSS-Fuzz / ClusterFuzzLite build script: compiles the engine and every
# fuzz target with $CC $CFLAGS, links each with $CXX $CXXFLAGS
# $LIB_FUZZING_ENGINE into $OUT/<target>, and puts the seed corpus (zip),
# dictionary and options next to it. Plain compiler calls, no meson: the
# fewer tools the builder image needs, the fewer ways the build can break.
#
# Run from the source tree (the Dockerfile's WORKDIR), or set UQCOW_SRC.
# Needs: SRC, OUT, CC, CXX, CFLAGS, CXXFLAGS, LIB_FUZZING_ENGINE (the
# builder image sets them all); WORK is used for objects when set.

root=${UQCOW_SRC:-$PWD}
[ -f "$root/engine/format.c" ] || root=$SRC/uqcow
cd "$root"

build=${WORK:-/tmp}/uqcow-fuzz-build
rm -rf "$build"
mkdir -p "$build/engine" "$build/fuzz" "$OUT"

std="-std=c11 -D_GNU_SOURCE"
inc="-Iengine/include -Iengine -Iengine/io -Itests/lib"

# A static library if the toolchain finds one, else the shared one: the
# runner image has only what the binary carries (no liburing or libzstd).
lib() {
	local a
	a=$($CC -print-file-name="lib$1.a")
	if [ "$a" != "lib$1.a" ] && [ -f "$a" ]; then echo "$a"; else echo "-l$1"; fi
}

# liburing: Ubuntu 20.04 (the default builder) ships 0.5, too old for the
# engine, so the Dockerfile clones a release into $SRC/liburing; build it
# uninstrumented (its nolibc objects don't mix with sanitizer runtimes).
uring_inc=
uring_lib=$(lib uring)
if [ -n "${SRC:-}" ] && [ -f "$SRC/liburing/configure" ]; then
	(
		cd "$SRC/liburing"
		unset CFLAGS CXXFLAGS LDFLAGS
		./configure --cc="${CC%% *}" --cxx="${CXX%% *}" >/dev/null
		make -j"$(nproc)" -C src liburing.a >/dev/null
	)
	uring_inc="-I$SRC/liburing/src/include"
	uring_lib="$SRC/liburing/src/liburing.a"
fi
libs="$uring_lib $(lib zstd) $(lib z) -lpthread"

# Engine sources: the list engine/meson.build compiles.
engine_src=$(sed -n "/^engine_src = files(/,/^)/p" engine/meson.build |
	     grep -o "'[^']*\.c'" | tr -d "'")
[ -n "$engine_src" ] || engine_src=$(cd engine && ls *.c io/*.c)
objs=
for f in $engine_src; do
	o="$build/engine/$(echo "$f" | tr / _).o"
	$CC $CFLAGS $std $inc $uring_inc -c "engine/$f" -o "$o"
	objs="$objs $o"
done
rm -f "$build/libuqcow_fuzz.a"
ar rcs "$build/libuqcow_fuzz.a" $objs

# The test-only fault wrapper (tests/lib), which libuqcow doesn't contain;
# image_ops records the image through it.
$CC $CFLAGS $std $inc $uring_inc -c tests/lib/fault.c -o "$build/fault.o"
rm -f "$build/libuqcow_fault.a"
ar rcs "$build/libuqcow_fault.a" "$build/fault.o"

# Every target with an .options file; the whole-image targets add the
# structure-aware mutator.
for opt in fuzz/*.options; do
	t=$(basename "$opt" .options)
	srcs="fuzz/$t.c"
	case $t in
	image_read) srcs="$srcs fuzz/image_mutator.c fuzz/refread.c" ;;
	image_ops|image_check) srcs="$srcs fuzz/image_mutator.c" ;;
	esac
	tobjs=
	for s in $srcs; do
		o="$build/fuzz/$(basename "$s" .c).o"
		$CC $CFLAGS $std $inc -c "$s" -o "$o"
		tobjs="$tobjs $o"
	done
	$CXX $CXXFLAGS $LIB_FUZZING_ENGINE $tobjs "$build/libuqcow_fault.a" \
		"$build/libuqcow_fuzz.a" $libs \
		-o "$OUT/$t"

	rm -f "$OUT/${t}_seed_corpus.zip"
	for d in "corpus/$t" "corpus/regressions/$t"; do
		if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then
			zip -q -j -r "$OUT/${t}_seed_corpus.zip" "$d"
		fi
	done
	cp "fuzz/$t.dict" "fuzz/$t.options" "$OUT/"
done
