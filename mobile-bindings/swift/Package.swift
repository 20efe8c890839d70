// swift-tools-version:5.9
// The iOS (and macOS) package. Not built on the Linux CI machine (no Swift or Xcode there): on
// a Mac run ./build-xcframework.sh first, which builds the Rust library for iOS, the iOS
// simulator and macOS, generates Sources/LiaisonCore/LiaisonCore.swift and writes
// build/LiaisonCoreFFI.xcframework (and a zip with its checksum, for a release's binary target).
// `swift test` then runs the tests on the Mac itself (the macOS slice).
import PackageDescription

let package = Package(
    name: "LiaisonCore",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "LiaisonCore", targets: ["LiaisonCore"]),
    ],
    targets: [
        .binaryTarget(name: "LiaisonCoreFFI", path: "build/LiaisonCoreFFI.xcframework"),
        // The Rust library verifies TLS with the platform's verifier (Security.framework).
        .target(name: "LiaisonCore", dependencies: ["LiaisonCoreFFI"], path: "Sources/LiaisonCore",
                linkerSettings: [.linkedFramework("Security"), .linkedFramework("CoreFoundation")]),
        .testTarget(name: "LiaisonCoreTests", dependencies: ["LiaisonCore"], path: "Tests/LiaisonCoreTests"),
    ]
)
