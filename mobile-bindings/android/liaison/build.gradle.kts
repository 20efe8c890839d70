// The Android library module: the generated Kotlin plus libliaison_ffi.so for each ABI, built
// with cargo-ndk. `./gradlew :liaison:assembleRelease` writes the AAR. Needs the Android SDK and
// NDK (ANDROID_NDK_HOME), rustup and `cargo install cargo-ndk`; not built on the Linux CI machine.
import org.gradle.api.tasks.Exec

plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

val workspace = rootProject.projectDir.resolve("../..").canonicalFile
val jniOut = layout.buildDirectory.dir("jniLibs").get().asFile
val generated = layout.buildDirectory.dir("generated/uniffi").get().asFile

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

dependencies {
    implementation("net.java.dev.jna:jna:5.13.0@aar")
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
val generateBindings by tasks.registering(Exec::class) {
    workingDir = workspace
    commandLine(
        "sh", "-c",
        "cargo build -p liaison-ffi -p uniffi-bindgen && " +
            "target/debug/uniffi-bindgen generate --library target/debug/libliaison_ffi.so " +
            "--language kotlin --no-format --config mobile-bindings/android/uniffi-android.toml " +
            "--out-dir ${generated.path}",
    )
}

tasks.named("preBuild") {
    dependsOn(cargoNdk, generateBindings)
}
