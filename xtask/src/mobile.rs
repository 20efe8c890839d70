//! Mobile bindings: generation (`cargo xtask bindings`), the Kotlin toolchain for the JVM tests,
//! and the Kotlin benchmark (`cargo xtask kotlin-bench`).
//!
//! The Kotlin compiler comes from the PyPI wheel `kotlin-jupyter-kernel` (it bundles kotlinc and
//! kotlinx.coroutines; there is no Android SDK or Gradle here), JNA from Debian. Both are
//! fetched once and cached under target/.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, have, run};

pub const GENERATED: &str = "mobile-bindings/generated";
const KOTLIN_WHEEL: &str = "kotlin-jupyter-kernel==0.19.0.944";
const TOOLCHAIN: &str = "target/kotlin-toolchain";
pub const KOTLIN_CLASSES: &str = "target/kotlin-classes";
const JNA: &str = "/usr/share/java/jna.jar";
const KOTLIN_SOURCES: &str = "mobile-bindings/kotlin/src";

/// Where cargo builds: `CARGO_TARGET_DIR` if set (a shared machine gives each worktree its
/// own), else `target/`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

fn profile_dir(release: bool) -> PathBuf {
    target_dir().join(if release { "release" } else { "debug" })
}

/// The unstripped library (stripped ones carry no uniffi metadata to generate from).
pub fn library(release: bool) -> PathBuf {
    profile_dir(release).join("libliaison_ffi.so")
}

/// Builds the library and generates Kotlin, Swift and Python into mobile-bindings/generated/.
pub fn bindings(release: bool) -> Result<()> {
    if release {
        cargo(&["build", "--release", "-p", "liaison-ffi"])?;
    }
    // The whole workspace, so features unify as in `cargo test --workspace` and nothing rebuilds.
    cargo(&["build", "--workspace"])?;
    let lib = library(release);
    let bindgen = profile_dir(false).join("uniffi-bindgen");
    for lang in ["kotlin", "swift", "python"] {
        let out = Path::new(GENERATED).join(lang);
        let _ = std::fs::remove_dir_all(&out);
        let status = Command::new(&bindgen)
            .args(["generate", "--library"])
            .arg(&lib)
            .args(["--language", lang, "--no-format", "--out-dir"])
            .arg(&out)
            .status()
            .context("running uniffi-bindgen")?;
        if !status.success() {
            bail!("uniffi-bindgen failed for {lang}");
        }
    }
    // The Android flavour (what the Gradle module generates), for the check that the module
    // declares everything it imports (tests/tests/bindings.rs); not compiled here.
    let out = Path::new(GENERATED).join("kotlin-android");
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(&bindgen)
        .args(["generate", "--library"])
        .arg(&lib)
        .args(["--language", "kotlin", "--no-format", "--config", "mobile-bindings/android/uniffi-android.toml"])
        .arg("--out-dir")
        .arg(&out)
        .status()
        .context("running uniffi-bindgen")?;
    if !status.success() {
        bail!("uniffi-bindgen failed for the Android Kotlin");
    }
    crate::swift_cancel::patch_file(&Path::new(GENERATED).join("swift/LiaisonCore.swift"))?;
    eprintln!("bindings generated in {GENERATED}/ from {}", lib.display());
    Ok(())
}

pub struct Kotlin {
    all: PathBuf,
    stdlib: PathBuf,
}

impl Kotlin {
    /// The runtime classpath (without our classes).
    pub fn classpath(&self) -> String {
        format!("{}:{}:{JNA}", self.stdlib.display(), self.all.display())
    }
}

/// JNA from Debian and the Kotlin compiler from the PyPI wheel, cached under target/.
pub fn kotlin_toolchain() -> Result<Kotlin> {
    if !have("java", "-version") {
        run("apt-get", &["update"], None)?;
        run("apt-get", &["install", "-y", "default-jdk-headless"], None)?;
    }
    // A fresh machine may have no package lists yet: update and retry once.
    if !Path::new(JNA).exists() && run("apt-get", &["install", "-y", "libjna-java"], None).is_err() {
        run("apt-get", &["update"], None)?;
        run("apt-get", &["install", "-y", "libjna-java"], None)?;
    }
    let jars = Path::new(TOOLCHAIN).join("jars");
    let all = jars.join("kotlin-jupyter-kernel-0.19.0-944-all.jar");
    let stdlib = jars.join("kotlin-stdlib-2.3.10-RC.jar");
    if !all.exists() || !stdlib.exists() {
        let wheel_dir = Path::new(TOOLCHAIN).join("wheel");
        let wheel_dir = wheel_dir.to_str().context("toolchain path")?;
        run("python3", &["-m", "pip", "download", "--no-deps", KOTLIN_WHEEL, "-d", wheel_dir], None)?;
        // Python's zipfile: `unzip` is not on every machine.
        let script = format!(
            "import glob,os,zipfile\n\
             w=glob.glob('{wheel_dir}/kotlin_jupyter_kernel-*.whl')[0]\n\
             z=zipfile.ZipFile(w)\n\
             os.makedirs('{jars}',exist_ok=True)\n\
             for n in z.namelist():\n\
             \x20 if n.startswith('run_kotlin_kernel/jars/') and n.endswith('.jar'):\n\
             \x20\x20 open(os.path.join('{jars}',os.path.basename(n)),'wb').write(z.read(n))\n",
            jars = jars.display()
        );
        run("python3", &["-c", &script], None)?;
        if !all.exists() || !stdlib.exists() {
            bail!("the Kotlin wheel did not hold the expected jars");
        }
    }
    Ok(Kotlin { all, stdlib })
}

fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut latest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() { newest(&path) } else { entry.metadata().ok()?.modified().ok() };
        latest = latest.max(t);
    }
    latest
}

fn kotlin_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            kotlin_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "kt") {
            out.push(path);
        }
    }
}

/// Compiles the generated Kotlin with the tests and the benchmark into target/kotlin-classes/
/// (skipped when nothing changed).
pub fn compile_kotlin(kotlin: &Kotlin) -> Result<()> {
    let out = Path::new(KOTLIN_CLASSES);
    let stamp = out.join(".stamp");
    let built = std::fs::metadata(&stamp).and_then(|m| m.modified()).ok();
    let inputs = newest(&Path::new(GENERATED).join("kotlin")).max(newest(Path::new(KOTLIN_SOURCES)));
    if built.is_some() && built >= inputs {
        return Ok(());
    }
    let mut files = Vec::new();
    kotlin_files(&Path::new(GENERATED).join("kotlin"), &mut files);
    kotlin_files(Path::new(KOTLIN_SOURCES), &mut files);
    let _ = std::fs::remove_dir_all(out);
    eprintln!("$ kotlinc ({} files) -d {}", files.len(), out.display());
    let status = Command::new("java")
        .arg("-cp")
        .arg(&kotlin.all)
        .args(["org.jetbrains.kotlin.cli.jvm.K2JVMCompiler", "-no-stdlib", "-no-reflect", "-jvm-target", "17"])
        .arg("-cp")
        .arg(kotlin.classpath())
        .args(&files)
        .arg("-d")
        .arg(out)
        .status()
        .context("running the Kotlin compiler")?;
    if !status.success() {
        bail!("compiling the Kotlin bindings and tests failed");
    }
    std::fs::write(&stamp, b"").context("writing the Kotlin stamp")?;
    Ok(())
}

/// Everything the binding tests (tests/tests/bindings.rs) need: the library, the generated
/// bindings, the Kotlin toolchain and the compiled Kotlin.
pub fn prepare_binding_tests() -> Result<()> {
    bindings(false)?;
    let kotlin = kotlin_toolchain()?;
    compile_kotlin(&kotlin)
}

/// The Kotlin benchmark against the release library: opens a store of KOLS KOLs and lists them.
pub fn kotlin_bench(kols: &str) -> Result<()> {
    bindings(true)?;
    let kotlin = kotlin_toolchain()?;
    compile_kotlin(&kotlin)?;
    let dir = tempdir_path("kol-bench");
    let cp = format!("{KOTLIN_CLASSES}:{}", kotlin.classpath());
    run(
        "java",
        &[
            &format!("-Djna.library.path={}", profile_dir(true).display()),
            "-cp",
            &cp,
            "app.liaison.bench.KolListBenchKt",
            dir.to_str().context("temp path")?,
            kols,
        ],
        None,
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempdir_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("liaison-{name}-{}", std::process::id()))
}

/// Builds the size-optimised mobile library and reports its stripped size.
pub fn mobile_release() -> Result<()> {
    cargo(&["build", "--profile", "mobile", "-p", "liaison-ffi"])?;
    let lib = Path::new("target/mobile/libliaison_ffi.so");
    let stripped = Path::new("target/mobile/libliaison_ffi.stripped.so");
    std::fs::copy(lib, stripped).context("copying the library")?;
    run("strip", &["--strip-all", stripped.to_str().context("path")?], None)?;
    let size = std::fs::metadata(stripped)?.len();
    println!("x86_64 libliaison_ffi.so, mobile profile, stripped: {size} bytes ({:.2} MiB)", size as f64 / 1048576.0);
    Ok(())
}
