// Live queries through the Flow adapters (Flows.kt), against the real library and relay: Bob
// watches while Alice writes on her phone and the relay carries it over.
package app.liaison.tests

import app.liaison.core.*
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.withTimeout

/** Collects [flow] into a queue on a background scope until [stop] is called. */
class Collected<T>(scope: CoroutineScope, flow: kotlinx.coroutines.flow.Flow<T>) {
    val items = LinkedBlockingQueue<T>()
    val job = scope.launch { flow.collect { items.add(it) } }

    /** The next item satisfying [cond], skipping the others. */
    fun next(what: String, timeoutMs: Long = 30_000, cond: (T) -> Boolean): T {
        val deadline = System.currentTimeMillis() + timeoutMs
        while (true) {
            val left = deadline - System.currentTimeMillis()
            if (left <= 0) throw AssertionError("timed out waiting for $what")
            val item = items.poll(left, TimeUnit.MILLISECONDS) ?: continue
            if (cond(item)) return item
        }
    }

    fun stop() = job.cancel()
}

suspend fun liveQueryTests(alice: LiaisonStore, bob: LiaisonStore, kol: String) {
    val scope = CoroutineScope(Dispatchers.Default)

    test("the KOL list flow emits the list first, then a colleague's new KOL as an insertion") {
        val kols = Collected(scope, bob.kolsFlow())
        val first = kols.next("the first emission") { true }
        assertEq(RowChange.Reset, first.change, "the first emission is a reset")
        assertTrue(first.rows.any { it.id == kol }, "the team's KOL is in the first emission")
        val fresh = alice.createKol(KolProfile(name = "Dr. Live Query", institution = "Kobe"))
        val update = kols.next("Alice's new KOL") { u -> u.rows.any { it.id == fresh } }
        val change = update.change
        assertTrue(change is RowChange.Diff, "an item-wise change, not a reset: $change")
        change as RowChange.Diff
        val at = update.rows.indexOfFirst { it.id == fresh }
        assertTrue(change.inserted.contains(at), "inserted at $at: $change")
        kols.stop()
    }

    test("a KOL's interactions flow is sorted newest first and follows new interactions") {
        val interactions = Collected(scope, bob.interactionsFlow(kol))
        interactions.next("the first emission") { true }
        val day = 86_400_000L
        val base = 1_760_000_000_000L
        val made = listOf(base + 2 * day, base, base + 5 * day).map { start ->
            alice.createInteraction(Interaction(kolId = kol, start = start, channel = InteractionChannel.PHONE))
        }
        val all = interactions.next("Alice's three interactions") { u -> made.all { id -> u.rows.any { it.id == id } } }
        val starts = all.rows.map { it.start }
        assertEq(starts.sortedDescending(), starts, "newest first")
        assertEq(made[2], all.rows.first { it.id in made }.id, "the latest visit first")
        interactions.stop()
    }

    test("cancelling the collector cancels the live query: no more callbacks") {
        val calls = java.util.concurrent.atomic.AtomicInteger()
        val seen = CopyOnWriteArrayList<QueryUpdate>()
        val handle = bob.watchKols(null, object : QueryObserver {
            override fun onUpdate(update: QueryUpdate) {
                calls.incrementAndGet()
                seen.add(update)
            }
        })
        eventually("the first answer") { calls.get() >= 1 }
        handle.cancel()
        assertTrue(handle.isCancelled(), "the handle says it is cancelled")
        val before = calls.get()
        // And through the Flow adapter: the collector's cancellation reaches the handle.
        val flowed = Collected(scope, bob.kolsFlow())
        flowed.next("the adapter's first emission") { true }
        flowed.stop()
        flowed.job.join()
        val fresh = alice.createKol(KolProfile(name = "Dr. After Cancel", institution = "Sendai"))
        eventually("the new KOL reached Bob") { bob.listKols().any { it.id == fresh } }
        Thread.sleep(300)
        assertEq(before, calls.get(), "the cancelled handle's observer heard nothing more")
        assertTrue(flowed.items.none { u -> u.rows.any { it.id == fresh } }, "the cancelled flow emitted nothing more")
    }

    test("an observer that throws still hears later updates") {
        val heard = LinkedBlockingQueue<QueryUpdate>()
        var thrown = 0
        val handle = bob.watchKols(null, object : QueryObserver {
            override fun onUpdate(update: QueryUpdate) {
                if (thrown == 0) {
                    thrown++
                    throw IllegalStateException("a bug in the app's observer")
                }
                heard.add(update)
            }
        })
        eventually("the first answer was thrown at") { thrown == 1 }
        val fresh = alice.createKol(KolProfile(name = "Dr. Still Heard", institution = "Fukuoka"))
        val deadline = System.currentTimeMillis() + 30_000
        while (true) {
            val u = heard.poll(deadline - System.currentTimeMillis(), TimeUnit.MILLISECONDS)
                ?: throw AssertionError("no update after the observer threw")
            if ((u.rows as? QueryRows.Kols)?.rows?.any { it.id == fresh } == true) break
        }
        handle.cancel()
    }

    test("the sync status and one record are live too") {
        val status = withTimeout(10_000) { bob.syncStatusFlow().first() }
        assertTrue(status.state == SyncState.UP_TO_DATE || status.state == SyncState.SYNCING, "current status first: $status")
        val plan = alice.createPlan(EngagementPlan(kolId = kol, title = "Live plan"))
        val record = Collected(scope, bob.recordFlow(plan))
        record.next("the plan arrives on Bob's phone") { it is RecordValue.Plan }
        val read = alice.getPlan(plan)
        alice.updatePlan(plan, read.plan.copy(title = "Live plan, retitled"), read.version)
        record.next("Alice's new title") { it is RecordValue.Plan && it.read.plan.title == "Live plan, retitled" }
        record.stop()
    }

    test("presence: Bob sees Alice editing the plan, then sees her leave") {
        val plan = alice.createPlan(EngagementPlan(kolId = kol, title = "Presence plan"))
        alice.waitUntilSynced(30_000)
        assertEq(RecordKind.ENGAGEMENT_PLAN, bob.fetch(plan, 30_000), "the plan reaches Bob")
        val present = Collected(scope, bob.presenceFlow(plan))
        present.next("the first, empty, list") { it.isEmpty() }
        alice.publishPresence(plan, "editing notes")
        val seen = present.next("Alice editing") { list -> list.any { it.user == "alice" } }
        assertEq("editing notes", seen.first { it.user == "alice" }.state, "her state")
        alice.publishPresence(plan, null)
        present.next("Alice gone") { list -> list.none { it.user == "alice" } }
        present.stop()
        assertThrows<LiaisonException.InvalidInput>("an empty state") { alice.publishPresence(plan, " ") }
    }

    test("background sync: with sync stopped, one call pushes the offline edit and pulls the colleague's, then stops") {
        bob.stopSync()
        val bobsKol = bob.createKol(KolProfile(name = "Dr. Offline Edit", institution = "Nara"))
        val alicesKol = alice.createKol(KolProfile(name = "Dr. Meanwhile", institution = "Kyoto"))
        alice.waitUntilSynced(30_000)
        val report = bob.backgroundSync(sync(tokenBob), 30_000)
        assertTrue(report.completed, "completed: $report")
        assertTrue(report.pushedDocuments >= 1, "Bob's new KOL was pushed: $report")
        assertTrue(report.receivedDocuments >= 1, "Alice's new KOL was pulled: $report")
        assertEq(0, report.pendingDocuments, "nothing left pending")
        assertTrue(bob.listKols().any { it.id == alicesKol }, "Alice's KOL is on Bob's phone")
        eventually("Bob's KOL reached Alice") { alice.listKols().any { it.id == bobsKol } }
        assertEq(SyncState.OFFLINE, bob.syncStatus().state, "the call stopped the sync it started")
        assertThrows<LiaisonException.InvalidInput>("a negative limit") { bob.backgroundSync(null, -1) }
    }
}
