#!/bin/sh
# Builds the libFuzzer harnesses into fuzz-build/ (run from the repository
# root; `make fuzz-build` does). The library sources are compiled here with
# clang, ASan and UBSan, and coverage instrumentation for libFuzzer; the
# CMake build is not touched. Installs libFuzzer's runtime
# (libclang-rt-14-dev) and libomp-dev when missing, as scripts/deps.sh does
# for the main packages. FUZZ_CFLAGS adds compiler flags (e.g.
# -fno-sanitize=pointer-overflow to fuzz past a known finding), FUZZ_BUILD
# names another output directory.
set -e
OUT=${FUZZ_BUILD:-fuzz-build}
CC=${FUZZ_CC:-clang}
JOBS=${JOBS:-$(nproc)}

missing=""
for p in clang libclang-rt-14-dev libomp-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "plumb fuzz: installing missing packages:$missing"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

BLAS_PC=/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)/openblas-openmp/pkgconfig
[ -d "$BLAS_PC" ] && export PKG_CONFIG_PATH="$BLAS_PC${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
PKGS="jansson libpcre2-8 hiredis libutf8proc openblas libzmq libprotobuf-c yaml-0.1"
PKG_CFLAGS=$(pkg-config --cflags $PKGS)
PKG_LIBS=$(pkg-config --libs $PKGS)

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-std=gnu11 -g -O1 $SAN -fopenmp -I. -I$OUT $PKG_CFLAGS -Wall -Wno-unused-parameter -Wno-sign-compare -Wno-pass-failed ${FUZZ_CFLAGS:-}"
ROOT=$(pwd)

mkdir -p "$OUT/obj" "$OUT/crashes" "$OUT/proto"
# The wire messages' C code, as the CMake build generates it.
if [ ! -f "$OUT/proto/plumb.pb-c.c" ] || [ proto/plumb.proto -nt "$OUT/proto/plumb.pb-c.c" ]; then
    protoc-c --c_out="$OUT/proto" -Iproto proto/plumb.proto
fi

# The library, as CMakeLists.txt globs it, compiled in parallel. A source
# that does not compile (work in progress elsewhere) is reported and left
# out of the archive; the link then fails only if a harness needs it.
SRCS="$(ls common/*.c kernels/*.c kernels/cpu/*.c model/*.c algo/*.c data/*.c worker/*.c actor/*.c \
    critic/*.c reward/*.c reference/*.c coordinator/*.c 2>/dev/null) $OUT/proto/plumb.pb-c.c"
JOBF="$OUT/jobs.$$"
: > "$JOBF"
for s in $SRCS; do
    o="$OUT/obj/$(echo "$s" | tr / _ | sed 's/\.c$/.o/')"
    if [ ! -f "$o" ] || [ "$s" -nt "$o" ] || [ fuzz/build.sh -nt "$o" ] ||
       [ -n "$(find $(dirname "$s") common -name '*.h' -newer "$o" 2>/dev/null | head -1)" ]; then
        rm -f "$o"
        echo "$s $o" >> "$JOBF"
    fi
done
export CC CFLAGS
xargs -r -P "$JOBS" -L 1 sh -c 'echo "$CC -c $0"; $CC $CFLAGS -fsanitize=fuzzer-no-link -c "$0" -o "$1" ||
    echo "plumb fuzz: WARNING: $0 does not compile; left out of the fuzz library"' < "$JOBF"
rm -f "$JOBF"
# Objects of sources that no longer exist must not linger in the archive.
for o in "$OUT"/obj/*.o; do
    [ -e "$o" ] || continue
    s=$(basename "$o" .o)
    found=0
    for c in $SRCS; do [ "$(echo "$c" | tr / _ | sed 's/\.c$//')" = "$s" ] && found=1 && break; done
    [ $found = 1 ] || rm -f "$o"
done
rm -f "$OUT/libplumb-fuzz.a"
ar rcs "$OUT/libplumb-fuzz.a" "$OUT"/obj/*.o

# One binary per fuzz/fuzz_<name>.c (fuzz_util.c is shared, not a harness).
for h in fuzz/fuzz_*.c; do
    [ "$h" = fuzz/fuzz_util.c ] && continue
    name=$(basename "$h" .c)
    # A harness for a module still being written names the source it needs.
    # (the line may end the comment: "*/" is dropped, and no name is globbed)
    req=$(sed -n 's/^ \* FUZZ_REQUIRES: *//p' "$h" | sed 's|\*/||g')
    skip=""
    set -f
    for r in $req; do [ -f "$r" ] || skip="$r"; done
    set +f
    if [ -n "$skip" ]; then
        echo "plumb fuzz: skipping $name: $skip does not exist yet"
        rm -f "$OUT/$name"
        continue
    fi
    echo "$CC -o $OUT/$name"
    $CC $CFLAGS -fsanitize=fuzzer -DFUZZ_ROOT="\"$ROOT\"" "$h" fuzz/fuzz_util.c \
        "$OUT/libplumb-fuzz.a" $PKG_LIBS -lm -o "$OUT/$name"
done
