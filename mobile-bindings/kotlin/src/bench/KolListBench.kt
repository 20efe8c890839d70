// Opens a store of N KOLs (made on the first run) and lists them, printing the times.
// `cargo xtask kotlin-bench [N]` runs it on the release library. Aim: open + list 2,000 KOLs
// under 200 ms. The peer in the same run is reading every KOL's full document.
package app.liaison.bench

import app.liaison.core.*
import java.io.File
import kotlinx.coroutines.runBlocking

fun ms(start: Long) = (System.nanoTime() - start) / 1e6

// The store's calls are `suspend` (they run on the library's threads); the benchmark awaits each
// in turn, so the times include the hop to a library thread and back.
fun main(args: Array<String>): Unit = runBlocking {
    val dir = File(args.getOrElse(0) { "kol-bench-store" })
    val n = args.getOrElse(1) { "2000" }.toInt()
    val config = StoreConfig(dir.path, "bench", "msl-1", "bench-phone", UserRole.MSL, "team-1")

    LiaisonStore.open(config).use { store ->
        val have = store.listKols().size
        if (have < n) {
            val t = System.nanoTime()
            for (i in have until n) {
                store.createKol(KolProfile(
                    name = "Dr. KOL ${i}", institution = "Hospital ${i % 97}", nameKana = "ケーオーエル ${i}",
                    specialty = "Oncology", therapeuticAreas = listOf("NSCLC"),
                ))
            }
            println("created ${n - have} KOLs in %.0f ms".format(ms(t)))
        }
    }

    // Cold: a fresh open, as when the app starts.
    val t0 = System.nanoTime()
    val store = LiaisonStore.open(config)
    val open = ms(t0)
    val t1 = System.nanoTime()
    val list = store.listKols()
    val firstList = ms(t1)
    check(list.size >= n) { "expected $n KOLs, listed ${list.size}" }
    val warm = (1..5).map { val t = System.nanoTime(); store.listKols(); ms(t) }.sorted()
    val t2 = System.nanoTime()
    for (k in list) store.getKol(k.id)
    val full = ms(t2)
    store.close()

    println("KOL list benchmark, ${list.size} KOLs (Kotlin on the JVM through JNA):")
    println("  open store            %8.1f ms".format(open))
    println("  first list            %8.1f ms".format(firstList))
    println("  open + first list     %8.1f ms   (aim < 200 ms)".format(open + firstList))
    println("  warm list (median/5)  %8.1f ms".format(warm[2]))
    println("  peer: read every full KOL document  %8.1f ms  -> listing is %.1fx faster".format(full, full / firstList))
}
