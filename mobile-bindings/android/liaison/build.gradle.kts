// The Android library module: the generated Kotlin plus libliaison_ffi.so for each ABI, built
// with cargo-ndk. `gradle :liaison:assembleRelease` writes the AAR;
// `gradle :liaison:publishReleasePublicationToBuildRepository` a Maven repository in
// build/repo (or publish to your own with `publishing.repositories`). Builds on macOS and Linux
// hosts. Needs the Android SDK and NDK (ANDROID_NDK_HOME), rustup with the Android targets and
// `cargo install cargo-ndk`; not built on the Linux CI machine.
import org.gradle.api.tasks.Exec

plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
    id("maven-publish")
}

val workspace = rootProject.projectDir.resolve("../..").canonicalFile
val jniOut = layout.buildDirectory.dir("jniLibs").get().asFile
val generated = layout.buildDirectory.dir("generated/uniffi").get().asFile
// Cargo's output directory: CARGO_TARGET_DIR when set, as cargo itself decides.
val cargoTarget = System.getenv("CARGO_TARGET_DIR")?.let { File(it) } ?: workspace.resolve("target")
// uniffi reads its metadata from an unstripped library built for the host: its file name
// depends on the host's platform.
val hostLibrary: String = System.getProperty("os.name").lowercase().let { os ->
    when {
        os.contains("mac") -> "libliaison_ffi.dylib"
        os.contains("linux") -> "libliaison_ffi.so"
        else -> error("build the Android library on macOS or Linux (host: $os)")
    }
}
// The library's version, the workspace's (Cargo.toml), so the AAR and the crate agree.
val liaisonVersion: String = workspace.resolve("Cargo.toml").readLines()
    .first { it.trim().startsWith("version = ") }
    .substringAfter('"').substringBefore('"')

android {
    namespace = "app.liaison.core"
    compileSdk = 35
    defaultConfig {
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
    }
    sourceSets["main"].java.srcDir(generated)
    // Hand-written constructors for new records (Records.kt), shared with the JVM tests.
    sourceSets["main"].java.srcDir(workspace.resolve("mobile-bindings/kotlin/src/main/kotlin"))
    sourceSets["main"].jniLibs.srcDir(jniOut)
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    publishing {
        singleVariant("release") {
            withSourcesJar()
        }
    }
}

kotlin {
    jvmToolchain(17)
}

// The platform verifier's Kotlin component must be the version of the native one the library
// was built with: read it from the workspace's Cargo.lock (rustls-platform-verifier-android).
val platformVerifierVersion: String = workspace.resolve("Cargo.lock").readLines().let { lines ->
    val at = lines.indexOfFirst { it.trim() == "name = \"rustls-platform-verifier-android\"" }
    lines.getOrNull(at + 1)?.substringAfter('"')?.substringBefore('"')
        ?: error("rustls-platform-verifier-android not found in Cargo.lock")
}

// Every package the generated and hand-written Kotlin imports is declared here:
// tests/tests/bindings.rs (`the_android_module_declares_what_its_kotlin_imports`) checks it.
dependencies {
    implementation("net.java.dev.jna:jna:5.13.0@aar")
    // The generated Kotlin's `@RequiresApi` (uniffi's `android = true`).
    implementation("androidx.annotation:annotation:1.9.1")
    // `api`: the live queries' Flow adapters (Flows.kt) put Flow in the library's own API.
    api("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.1")
    implementation("rustls:rustls-platform-verifier:$platformVerifierVersion")
}

val cargoNdk by tasks.registering(Exec::class) {
    workingDir = workspace
    commandLine(
        "cargo", "ndk",
        "-t", "arm64-v8a", "-t", "armeabi-v7a", "-t", "x86_64",
        "-o", jniOut.path,
        "build", "--profile", "mobile", "-p", "liaison-ffi",
    )
}

// Generated from an unstripped host build (stripped libraries carry no uniffi metadata).
val hostBuild by tasks.registering(Exec::class) {
    workingDir = workspace
    commandLine("cargo", "build", "-p", "liaison-ffi", "-p", "uniffi-bindgen")
}

val generateBindings by tasks.registering(Exec::class) {
    dependsOn(hostBuild)
    workingDir = workspace
    commandLine(
        cargoTarget.resolve("debug/uniffi-bindgen").path,
        "generate", "--library", cargoTarget.resolve("debug/$hostLibrary").path,
        "--language", "kotlin", "--no-format",
        "--config", "mobile-bindings/android/uniffi-android.toml",
        "--out-dir", generated.path,
    )
}

tasks.named("preBuild") {
    dependsOn(cargoNdk, generateBindings)
}

publishing {
    publications {
        register<MavenPublication>("release") {
            groupId = "app.liaison"
            artifactId = "liaison-android"
            version = liaisonVersion
            afterEvaluate { from(components["release"]) }
            pom {
                name.set("liaison")
                description.set("Offline-first sync of KOL records for field medical teams (Rust core, Kotlin API).")
            }
        }
    }
    repositories {
        maven {
            name = "build"
            url = uri(layout.buildDirectory.dir("repo"))
        }
    }
}
