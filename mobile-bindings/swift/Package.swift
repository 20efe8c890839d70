// swift-tools-version:5.9
// The iOS package. Not built on the Linux CI machine (no Swift or Xcode there): on a Mac run
// ./build-xcframework.sh first, which builds the Rust library for the iOS targets, generates
// Sources/LiaisonCore/LiaisonCore.swift and writes build/LiaisonCoreFFI.xcframework.
import PackageDescription

let package = Package(
    name: "LiaisonCore",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "LiaisonCore", targets: ["LiaisonCore"]),
    ],
    targets: [
        .binaryTarget(name: "LiaisonCoreFFI", path: "build/LiaisonCoreFFI.xcframework"),
        .target(name: "LiaisonCore", dependencies: ["LiaisonCoreFFI"], path: "Sources/LiaisonCore"),
        .testTarget(name: "LiaisonCoreTests", dependencies: ["LiaisonCore"], path: "Tests/LiaisonCoreTests"),
    ]
)
