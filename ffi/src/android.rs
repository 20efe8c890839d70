//! Android only: the platform certificate verifier (`rustls-platform-verifier`) calls Android's
//! TrustManager through the JVM, so it needs the JVM and the app's `Context` before the first
//! connection. The app calls `LiaisonPlatform.init(applicationContext)` once at start
//! (mobile-bindings/README.md); without it the first TLS handshake fails.
//!
//! Not compiled on the Linux CI machine (no Android target or NDK there); written after the
//! crate's own example for jni 0.22.

use jni::EnvUnowned;
use jni::errors::ThrowRuntimeExAndDefault;
use jni::objects::{JClass, JObject};

/// `app.liaison.core.LiaisonPlatform.init(context)` (a Kotlin `object` with a `@JvmStatic
/// external fun init(context: Context)`).
#[jni::jni_mangle("app.liaison.core.LiaisonPlatform")]
pub fn init<'caller>(mut unowned_env: EnvUnowned<'caller>, _class: JClass<'caller>, context: JObject<'caller>) {
    unowned_env
        .with_env(|env| rustls_platform_verifier::android::init_with_env(env, context))
        .resolve::<ThrowRuntimeExAndDefault>();
}
