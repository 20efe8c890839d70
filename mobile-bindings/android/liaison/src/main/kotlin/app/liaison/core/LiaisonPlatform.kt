package app.liaison.core

import android.content.Context

/**
 * Call `LiaisonPlatform.init(applicationContext)` once, before the first `startSync`: the
 * library verifies the relay's certificate with Android's own TrustManager (so MDM-installed
 * enterprise CAs are trusted), which it reaches through the JVM. Needs the
 * `rustls:rustls-platform-verifier` AAR on the classpath (see mobile-bindings/README.md).
 */
object LiaisonPlatform {
    init {
        System.loadLibrary("liaison_ffi")
    }

    @JvmStatic
    external fun init(context: Context)
}
