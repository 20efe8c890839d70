#!/usr/bin/env bash
# Builds LiaisonCoreFFI.xcframework and the generated Swift. macOS with Xcode and rustup only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

if [[ "$(uname)" != "Darwin" ]]; then
    echo "build-xcframework.sh needs macOS with Xcode (xcodebuild, lipo)" >&2
    exit 1
fi

ios=aarch64-apple-ios
sims=(aarch64-apple-ios-sim x86_64-apple-ios)
# The macOS slice: `swift test` on a Mac runs the package's tests natively, no simulator needed.
macs=(aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "$ios" "${sims[@]}" "${macs[@]}"

for t in "$ios" "${sims[@]}" "${macs[@]}"; do
    cargo build --profile mobile -p liaison-ffi --target "$t"
done

# Generate from a host build: uniffi reads its metadata from an unstripped library.
cargo build -p liaison-ffi -p uniffi-bindgen
gen="$root/mobile-bindings/generated/swift"
rm -rf "$gen"
target/debug/uniffi-bindgen generate --library target/debug/libliaison_ffi.dylib \
    --language swift --no-format --out-dir "$gen"
# uniffi 0.32's Swift does not hand a cancelled Task to Rust; this makes it (xtask/src/swift_cancel.rs).
cargo xtask swift-cancellable "$gen/LiaisonCore.swift"

build="$here/build"
rm -rf "$build"
mkdir -p "$build/headers" "$build/sim" "$build/macos"
cp "$gen/LiaisonCoreFFI.h" "$build/headers/"
cp "$gen/LiaisonCoreFFI.modulemap" "$build/headers/module.modulemap"
cp "$gen/LiaisonCore.swift" "$here/Sources/LiaisonCore/LiaisonCore.swift"

lipo -create "target/${sims[0]}/mobile/libliaison_ffi.a" "target/${sims[1]}/mobile/libliaison_ffi.a" \
    -output "$build/sim/libliaison_ffi.a"
lipo -create "target/${macs[0]}/mobile/libliaison_ffi.a" "target/${macs[1]}/mobile/libliaison_ffi.a" \
    -output "$build/macos/libliaison_ffi.a"
xcodebuild -create-xcframework \
    -library "target/$ios/mobile/libliaison_ffi.a" -headers "$build/headers" \
    -library "$build/sim/libliaison_ffi.a" -headers "$build/headers" \
    -library "$build/macos/libliaison_ffi.a" -headers "$build/headers" \
    -output "$build/LiaisonCoreFFI.xcframework"

# For apps that take the package as a binary target from a release (see mobile-bindings/README.md):
# the zipped XCFramework and its checksum.
(cd "$build" && rm -f LiaisonCoreFFI.xcframework.zip && zip -qry LiaisonCoreFFI.xcframework.zip LiaisonCoreFFI.xcframework)
checksum="$(cd "$here" && swift package compute-checksum "$build/LiaisonCoreFFI.xcframework.zip")"
echo "$checksum" > "$build/LiaisonCoreFFI.xcframework.zip.checksum"
echo "built $build/LiaisonCoreFFI.xcframework (iOS, iOS simulator, macOS) and its zip (checksum $checksum)"
echo "now: swift test (macOS slice), xcodebuild test -scheme LiaisonCore -destination 'platform=iOS Simulator,name=iPhone 16', or add the package in Xcode"
