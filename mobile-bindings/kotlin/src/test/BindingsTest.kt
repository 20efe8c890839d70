// JVM tests of the Kotlin bindings against a real relay. Started by tests/tests/bindings.rs,
// which runs the relay and passes its address and two MSLs' credentials in the environment.
package app.liaison.tests

import app.liaison.core.*
import java.io.File
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess
import kotlinx.coroutines.*

fun env(name: String): String = System.getenv(name) ?: error("$name is not set: run through `cargo xtask test`")

val url = env("LIAISON_URL")
val spkiPin = env("LIAISON_SPKI_PIN")
val tokenDan = env("LIAISON_TOKEN_DAN")
val tenant = env("LIAISON_TENANT")
val team = env("LIAISON_TEAM")
val tokenAlice = env("LIAISON_TOKEN_ALICE")
val tokenBob = env("LIAISON_TOKEN_BOB")
val tokenCarol = env("LIAISON_TOKEN_CAROL")
val work = File(env("LIAISON_WORKDIR"))

class Recorder : LiaisonObserver {
    val changes = LinkedBlockingQueue<DocumentChange>()
    val threads: MutableSet<String> = java.util.Collections.synchronizedSet(mutableSetOf())
    @Volatile var status: SyncStatus? = null
    @Volatile var wiped: WipeReason? = null

    override fun documentsChanged(changes: List<DocumentChange>) {
        // The library calls from one long-lived native thread: keep it attached to the JVM
        // rather than letting JNA attach and detach it on every call.
        com.sun.jna.Native.detach(false)
        threads.add(Thread.currentThread().name)
        this.changes.addAll(changes)
    }

    override fun syncStatusChanged(status: SyncStatus) {
        com.sun.jna.Native.detach(false)
        threads.add(Thread.currentThread().name)
        this.status = status
    }

    override fun localDataWiped(reason: WipeReason) {
        com.sun.jna.Native.detach(false)
        wiped = reason
    }

    /** Waits for a change of [id] that came from the relay. */
    fun awaitRemote(id: String, timeoutMs: Long = 30_000): DocumentChange {
        val deadline = System.currentTimeMillis() + timeoutMs
        while (true) {
            val left = deadline - System.currentTimeMillis()
            if (left <= 0) throw AssertionError("no remote change of $id reached the observer")
            val c = changes.poll(left, TimeUnit.MILLISECONDS) ?: continue
            if (c.id == id && c.remote) return c
        }
    }
}

class Logs : LogSink {
    val records = LinkedBlockingQueue<LogRecord>()
    override fun log(record: LogRecord) {
        records.add(record)
    }
}

suspend fun open(user: String, device: String): LiaisonStore =
    LiaisonStore.open(StoreConfig(File(work, device).path, tenant, user, device, UserRole.MSL, team))

fun sync(token: String) = SyncConfig(url, token, TrustConfig.PinnedKeys(listOf(spkiPin)), backoffMinMs = 50, backoffMaxMs = 500)

/** Has the test harness revoke dan's credential through the relay's admin API, and waits. */
suspend fun revokeDan() {
    File(work, "revoke-dan").writeText("")
    eventually("the harness revoked dan's credential") { File(work, "revoked-dan").exists() }
}

/** A provider that hands out [answers] in turn (the last one from then on) and records why it was asked. */
class ScriptedProvider(private vararg val answers: CredentialAnswer) : CredentialProvider {
    val reasons = java.util.concurrent.CopyOnWriteArrayList<CredentialReason>()
    val threads: MutableSet<String> = java.util.Collections.synchronizedSet(mutableSetOf())
    override fun credential(reason: CredentialReason): CredentialAnswer {
        threads.add(Thread.currentThread().name)
        reasons.add(reason)
        return answers[minOf(reasons.size, answers.size) - 1]
    }
    override fun credentialIssued(token: String, expiresAtMs: Long?) {}
}

fun assertEq(expected: Any?, actual: Any?, what: String) {
    if (expected != actual) throw AssertionError("$what: expected <$expected>, got <$actual>")
}

fun assertTrue(cond: Boolean, what: String) {
    if (!cond) throw AssertionError(what)
}

inline fun <reified E : Throwable> assertThrows(what: String, block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("$what: expected ${E::class.simpleName}, got $e")
    }
    throw AssertionError("$what: expected ${E::class.simpleName}, nothing was thrown")
}

suspend fun eventually(what: String, timeoutMs: Long = 30_000, cond: suspend () -> Boolean) {
    val deadline = System.currentTimeMillis() + timeoutMs
    while (!cond()) {
        if (System.currentTimeMillis() > deadline) throw AssertionError("timed out waiting until $what")
        delay(20)
    }
}

var failures = 0
val stores = mutableMapOf<String, LiaisonStore>()
var logSink: Logs? = null

suspend fun test(name: String, body: suspend () -> Unit) {
    try {
        body()
        println("ok   $name")
    } catch (e: Throwable) {
        failures++
        println("FAIL $name: $e")
        e.printStackTrace()
        for ((who, store) in stores) println("  status of $who: ${store.syncStatus()}")
        logSink?.records?.toList()?.takeLast(30)?.forEach { println("  log ${it.level} ${it.target}: ${it.message}") }
    }
}

fun main(): Unit = runBlocking<Unit> {
    val logs = Logs()
    setLogSink(logs, LogLevel.INFO)
    logSink = logs

    val alice = open("alice", "alice-phone")
    val bob = open("bob", "bob-phone")
    val recAlice = Recorder().also { alice.setObserver(it) }
    val recBob = Recorder().also { bob.setObserver(it) }
    stores["alice"] = alice
    stores["bob"] = bob
    var kol = ""
    var plan = ""

    test("two MSLs edit one plan offline, connect, and see each other's edits through the observer") {
        kol = alice.createKol(KolProfile(name = "Dr. Aiko Tanaka", institution = "Osaka University Hospital"))
        plan = alice.createPlan(EngagementPlan(kolId = kol, title = "FY27 engagement", notes = "Agenda: "))
        alice.startSync(sync(tokenAlice))
        bob.startSync(sync(tokenBob))
        runBlocking {
            alice.waitUntilSynced(30_000)
            assertEq(RecordKind.ENGAGEMENT_PLAN, bob.fetch(plan, 30_000), "the plan reaches Bob")
            assertEq(RecordKind.KOL_PROFILE, bob.fetch(kol, 30_000), "the KOL reaches Bob")
        }
        assertEq("Agenda: ", bob.getPlan(plan).plan.notes, "Bob's copy of the notes")
        // Bob keeps a cursor on the 'A' of "Agenda" while Alice inserts before it.
        val cursor = bob.planNotesCursor(plan, 0)

        alice.setNetwork(NetworkState.DOWN)
        bob.setNetwork(NetworkState.DOWN)
        alice.splicePlanNotes(plan, 0, 0, "患者 first. ")
        bob.splicePlanNotes(plan, 8, 0, "discuss 😀 trial data")
        val read = bob.getPlan(plan)
        bob.updatePlan(plan, read.plan.copy(title = "FY27 plan"), read.version)
        assertTrue(alice.syncStatus().pendingDocuments >= 1, "Alice's offline edit is pending")

        alice.setNetwork(NetworkState.UP)
        bob.setNetwork(NetworkState.UP)
        runBlocking {
            alice.waitUntilSynced(30_000)
            bob.waitUntilSynced(30_000)
        }
        recAlice.awaitRemote(plan)
        recBob.awaitRemote(plan)
        val expected = "患者 first. Agenda: discuss 😀 trial data"
        eventually("both devices hold both edits") {
            alice.getPlan(plan).plan.notes == expected && bob.getPlan(plan).plan.notes == expected
        }
        assertEq("FY27 plan", alice.getPlan(plan).plan.title, "Bob's title reached Alice")
        assertEq("患者 first. ".length, bob.planNotesCursorPosition(plan, cursor), "Bob's cursor moved")
        val authors = alice.history(plan).mapNotNull { it.user }.toSet()
        assertEq(setOf("alice", "bob"), authors, "history names both authors")
        assertTrue(alice.fieldHistory(plan, "notes").size >= 3, "the notes' history has every edit")
        eventually("the observer hears the status") { recAlice.status?.state == SyncState.UP_TO_DATE }
        assertEq(1, recAlice.threads.size, "observer calls come from one thread: ${recAlice.threads}")
        assertEq(1, recBob.threads.size, "observer calls come from one thread: ${recBob.threads}")
    }

    test("a form saved from a stale read keeps what a colleague did meanwhile") {
        val id = alice.createPlan(EngagementPlan(kolId = kol, title = "FY28 engagement", notes = "Agenda"))
        runBlocking {
            alice.waitUntilSynced(30_000)
            assertEq(RecordKind.ENGAGEMENT_PLAN, bob.fetch(id, 30_000), "the plan reaches Bob")
        }
        // Alice opens the plan's form.
        val form = alice.getPlan(id)

        // Bob retitles, adds an activity and types into the notes; it reaches Alice.
        val bobs = bob.getPlan(id)
        val visit = PlanActivity(id = "bob-visit", description = "Visit in March", owner = "bob")
        bob.updatePlan(id, bobs.plan.copy(title = "FY28, Bob's title", activities = listOf(visit)), bobs.version)
        bob.splicePlanNotes(id, 6, 0, " for Bob")
        runBlocking { bob.waitUntilSynced(30_000) }
        eventually("Bob's edits reach Alice") { alice.getPlan(id).plan.notes == "Agenda for Bob" }

        // Alice saves her stale form with one objective added.
        val objective = PlanItem("alice-1", "Alice's objective")
        alice.updatePlan(id, form.plan.copy(objectives = form.plan.objectives + objective), form.version)
        val saved = alice.getPlan(id).plan
        assertEq("FY28, Bob's title", saved.title, "Bob's title survives")
        assertEq(listOf(visit), saved.activities, "Bob's activity survives")
        assertEq("Agenda for Bob", saved.notes, "Bob's text survives")
        assertEq(listOf(objective), saved.objectives, "Alice's objective is there")
        runBlocking { alice.waitUntilSynced(30_000) }
        eventually("Bob sees the same plan") { bob.getPlan(id).plan == saved }
    }

    test("a new phone gets the team's records without ids, and a colleague's new record arrives while connected") {
        runBlocking { alice.waitUntilSynced(30_000) }
        val carol = open("carol", "carol-new-phone")
        val rec = Recorder().also { carol.setObserver(it) }
        carol.startSync(sync(tokenCarol))
        val first = runBlocking { carol.waitForFirstSync(30_000) }
        assertTrue(first.firstSyncComplete, "the first sync completes")
        assertTrue(first.documentsKnown >= 3 && first.documentsReceived == first.documentsKnown, "progress: $first")
        assertTrue(carol.listKols().any { it.id == kol }, "the team's KOL is on the new phone")
        assertTrue(runCatching { carol.getPlan(plan) }.isSuccess, "the team's plan is on the new phone")
        assertEq(0, carol.syncStatus().pendingDocuments, "received records are not pending")

        val fresh = alice.createKol(KolProfile(name = "Dr. Ren Mori", institution = "Nagoya"))
        eventually("Alice's new KOL reaches the new phone") { carol.listKols().any { it.id == fresh } }
        eventually("the observer says it was created") {
            generateSequence { rec.changes.poll() }.any { it.id == fresh && it.reason == ChangeReason.CREATED && it.remote }
        }
        runBlocking { carol.stopSync() }
        carol.close()
    }

    test("every kind of record is built from the fields that matter and reads back as built") {
        val k = alice.createKol(KolProfile(name = "Dr. Defaults", institution = "Clinic", specialty = "Oncology"))
        val visit = alice.createInteraction(Interaction(kolId = k, start = 1_700_000_000_000, channel = InteractionChannel.PHONE))
        val insight = alice.createInsight(MedicalInsight(text = "Prefers shorter regimens", kolIds = listOf(k)))
        val request = alice.createRequest(MedicalInformationRequest(
            kolId = k, question = "Dosing in renal impairment?", origin = RequestOrigin.UNSOLICITED,
            recipient = "Dr. Defaults", deliveryMethod = DeliveryMethod.EMAIL,
        ))
        val plan = alice.createPlan(EngagementPlan(kolId = k, title = "FY27"))
        val profile = alice.getKol(k).profile
        assertEq(PrivacyState.ACTIVE, profile.privacy, "a new KOL is active")
        assertEq(ContactPreferences(), profile.contact, "no contact preferences")
        assertEq("Oncology", profile.specialty, "the field given")
        val read = alice.getInteraction(visit)
        assertEq(RecordStatus.DRAFT, read.interaction.status, "a new interaction is a draft")
        assertEq(InteractionChannel.PHONE, read.interaction.channel, "the channel given")
        assertEq(listOf(k), alice.getInsight(insight).insight.kolIds, "the insight's KOLs")
        assertEq(RecordStatus.DRAFT, alice.getInsight(insight).insight.status, "a new insight is a draft")
        val mir = alice.getRequest(request).request
        assertEq(Fulfilment.OPEN, mir.fulfilment, "a new request is open")
        assertEq("", mir.answer, "no answer yet")
        assertEq("", alice.getPlan(plan).plan.notes, "a new plan has no notes")
        // Records are immutable: an edit is a copy.
        val followUp = FollowUp(id = "f1", description = "Send the paper", owner = "alice")
        assertEq(TaskStatus.OPEN, followUp.status, "a new follow-up is open")
        alice.updateInteraction(visit, read.interaction.copy(followUps = listOf(followUp)), read.version)
        assertEq(listOf(followUp), alice.getInteraction(visit).interaction.followUps, "the follow-up is saved")
        assertTrue(InteractionChannel.entries.size == 6, "enum entries list every channel and UNKNOWN")
        assertEq(InteractionChannel.entries - InteractionChannel.UNKNOWN, InteractionChannel.known, "pickers offer the known ones")
        // A value a newer app would write cannot be chosen for a new record.
        assertThrows<LiaisonException.InvalidInput>("a new record with an unknown channel") {
            runBlocking { alice.createInteraction(Interaction(kolId = k, start = 1L, channel = InteractionChannel.UNKNOWN)) }
        }
        // Indexes and timeouts are Int and Long; a negative one is refused.
        assertThrows<LiaisonException.InvalidInput>("a negative index") { alice.splicePlanNotes(plan, -1, 0, "x") }
        assertThrows<LiaisonException.InvalidInput>("a negative timeout") { runBlocking { alice.waitUntilSynced(-1) } }
    }

    test("errors arrive as the generated exception types") {
        assertThrows<LiaisonException.InvalidInput>("a malformed id") { alice.getKol("not-an-id") }
        assertThrows<LiaisonException.WrongKind>("a KOL read as a plan") { alice.getPlan(kol) }
        assertThrows<LiaisonException.InvalidInput>("a splice past the end") {
            alice.splicePlanNotes(plan, 10_000, 0, "x")
        }
        val visit = alice.createInteraction(Interaction(kolId = kol, start = System.currentTimeMillis(), channel = InteractionChannel.IN_PERSON))
        alice.submit(visit)
        val locked = assertThrows<LiaisonException.Locked>("editing a submitted interaction") {
            val read = alice.getInteraction(visit)
            alice.updateInteraction(visit, read.interaction.copy(location = "Ward 3, Dr. Tanaka's office"), read.version)
        }
        assertTrue(!locked.message.orEmpty().contains("Tanaka"), "the message holds no personal data")
        val other = alice.getPlan(plan)
        assertThrows<LiaisonException.StaleVersion>("a version read from another record") {
            alice.updateInteraction(visit, alice.getInteraction(visit).interaction, other.version)
        }
        assertThrows<LiaisonException.StoreInUse>("a second open of the same store") { open("alice", "alice-phone") }
    }

    test("a wrong credential shows in the status and a wait times out") {
        val carol = open("alice", "carol-phone")
        val rec = Recorder().also { carol.setObserver(it) }
        carol.createKol(KolProfile(name = "Dr. Kenji Sato", institution = "Kyoto Clinic"))
        carol.startSync(sync("lsn_not_a_real_token"))
        assertThrows<LiaisonException.Timeout>("waiting with a wrong token") {
            runBlocking { carol.waitUntilSynced(1_500) }
        }
        val status = carol.syncStatus()
        assertTrue(status.state != SyncState.UP_TO_DATE, "not up to date")
        assertTrue(status.lastError != null, "the status says why")
        assertTrue(!status.lastError.orEmpty().contains("lsn_not_a_real_token"), "the error does not echo the token")
        val problem = status.problem
        assertTrue(problem is SyncProblem.Unauthorized, "the typed state reads unauthorized: $problem")
        problem as SyncProblem.Unauthorized
        assertEq(401, problem.httpStatus, "the HTTP status is kept")
        assertEq(AuthProblem.Unknown, problem.reason, "an unknown credential")
        eventually("the observer hears the failure") { rec.status?.lastError != null }
        runBlocking { carol.stopSync() }
        carol.close()
    }

    test("a suspend call can be cancelled, and the store works after it") {
        bob.setNetwork(NetworkState.DOWN)
        bob.splicePlanNotes(plan, 0, 0, "» ")
        runBlocking {
            val started = System.nanoTime()
            val job = launch(Dispatchers.Default) { bob.waitUntilSynced(60_000) }
            delay(300)
            assertTrue(job.isActive, "the wait is still running while offline")
            job.cancelAndJoin()
            val ms = (System.nanoTime() - started) / 1_000_000
            assertTrue(job.isCancelled, "the job was cancelled")
            assertTrue(ms < 5_000, "cancellation took $ms ms")
            bob.setNetwork(NetworkState.UP)
            bob.waitUntilSynced(30_000)
        }
        eventually("Alice sees Bob's edit made after the cancelled wait") { alice.getPlan(plan).plan.notes.startsWith("» ") }
    }

    // The UI thread of an app: one thread, every coroutine of the screen on it.
    val ui = java.util.concurrent.Executors.newSingleThreadExecutor { Thread(it, "ui") }.asCoroutineDispatcher()
    // A KOL whose interests run to 50,000 characters: a write of it takes a while (it is built,
    // saved and fsynced), long enough to see what the calling thread does meanwhile.
    val bigInterests = "Immuno-oncology, biomarkers; ".repeat(1_700)

    test("a suspend call leaves its thread free: another coroutine on the same single thread runs while writes are on disk") {
        val fay = open("alice", "fay-phone")
        try {
            withContext(ui) {
                val inFlight = java.util.concurrent.atomic.AtomicBoolean(false)
                var ticksWhileWriting = 0
                val ticker = launch {
                    while (isActive) {
                        if (inFlight.get()) ticksWhileWriting++
                        yield()
                    }
                }
                yield()
                inFlight.set(true)
                val started = System.nanoTime()
                repeat(5) { fay.createKol(KolProfile(name = "Dr. Busy $it", institution = "Clinic", scientificInterests = bigInterests)) }
                val ms = (System.nanoTime() - started) / 1_000_000
                inFlight.set(false)
                ticker.cancelAndJoin()
                // Were the calls blocking, the ticker could not run before they all returned: 0 ticks.
                println("     5 large writes took $ms ms; the ui thread ticked $ticksWhileWriting times meanwhile")
                assertTrue(ticksWhileWriting >= 5, "the ui thread ran other work while writes were in flight: $ticksWhileWriting ticks in $ms ms")
            }
            assertEq(5, fay.listKols().count { it.name.startsWith("Dr. Busy") }, "every write is stored")
        } finally {
            fay.close()
        }
    }

    test("cancelling a coroutine mid-write returns at once, and the record is stored whole or not at all") {
        val gus = open("alice", "gus-phone")
        try {
            withContext(ui) {
                val timed = System.nanoTime()
                gus.createKol(KolProfile(name = "Dr. Timed", institution = "Clinic", scientificInterests = bigInterests))
                val writeMs = (System.nanoTime() - timed) / 1_000_000
                val outcomes = mutableListOf<String>()
                var cancelledInFlight = 0
                for (attempt in 0 until 6) {
                    val job = launch { gus.createKol(KolProfile(name = "Dr. Cancelled $attempt", institution = "Clinic", scientificInterests = bigInterests)) }
                    // Let the call start (its first poll queues the write), and for later attempts
                    // let the write run a little, so some are cancelled before and some during it.
                    yield()
                    if (attempt > 0) delay(attempt * writeMs / 8)
                    if (job.isCompleted) {
                        outcomes.add("done before the cancel")
                        continue
                    }
                    outcomes.add("cancelled")
                    val cancelled = System.nanoTime()
                    job.cancelAndJoin()
                    val cancelMs = (System.nanoTime() - cancelled) / 1_000_000
                    // Were the call blocking, the job would have finished inside `yield()`: never cancelled.
                    assertTrue(job.isCancelled, "attempt $attempt: the call was cancelled while in flight")
                    assertTrue(cancelMs < 50, "attempt $attempt: cancelling took $cancelMs ms (a write takes $writeMs ms)")
                    cancelledInFlight++
                }
                assertTrue(cancelledInFlight >= 1, "at least the call cancelled right after it started was in flight")
                // Writes apply in call order: once this one is back, every cancelled one has
                // either run or never will.
                gus.createKol(KolProfile(name = "Dr. After", institution = "Clinic"))
                val kols = gus.listKols()
                for (attempt in 0 until 6) {
                    val found = kols.filter { it.name == "Dr. Cancelled $attempt" }
                    assertTrue(found.size <= 1, "at most one record per call")
                    if (found.size == 1) {
                        assertEq(bigInterests, gus.getKol(found[0].id).profile.scientificInterests, "attempt $attempt: stored whole")
                        outcomes[attempt] += " -> stored whole"
                    } else {
                        outcomes[attempt] += " -> not stored"
                    }
                }
                println("     a write takes $writeMs ms; cancelled calls: $outcomes")
                assertTrue(kols.any { it.name == "Dr. After" }, "the store takes writes after the cancellations")
            }
        } finally {
            gus.close()
        }
    }

    test("an observer that calls back into the store and is slow stalls neither writes nor itself") {
        val dave = open("alice", "dave-phone")
        val seen = LinkedBlockingQueue<String>()
        dave.setObserver(object : LiaisonObserver {
            override fun documentsChanged(changes: List<DocumentChange>) {
                com.sun.jna.Native.detach(false)
                for (c in changes) {
                    // Re-entrant: the callback reads the store it is called by...
                    // (A callback is not a coroutine: it blocks its own library thread to read.)
                    val read = runBlocking { dave.getKol(c.id) }
                    assertEq("Clinic", read.profile.institution, "the record read back inside the callback")
                    seen.add(c.id)
                }
                // ...and is slow.
                Thread.sleep(1_000)
            }
            override fun syncStatusChanged(status: SyncStatus) {}
            override fun localDataWiped(reason: WipeReason) {}
        })
        val started = System.nanoTime()
        val ids = (0 until 10).map { dave.createKol(KolProfile(name = "Dr. $it", institution = "Clinic")) }
        val ms = (System.nanoTime() - started) / 1_000_000
        // Were writes to wait for the observer, ten of them would take ten seconds or more.
        assertTrue(ms < 5_000, "10 writes beside a slow observer took $ms ms")
        eventually("the observer read every new record back") { ids.all { it in seen } }
        dave.close()
    }

    test("an observer that throws still hears every later change") {
        val erin = open("alice", "erin-phone")
        val seen = LinkedBlockingQueue<String>()
        val calls = java.util.concurrent.atomic.AtomicInteger()
        erin.setObserver(object : LiaisonObserver {
            override fun documentsChanged(changes: List<DocumentChange>) {
                com.sun.jna.Native.detach(false)
                for (c in changes) seen.add(c.id)
                if (calls.incrementAndGet() % 2 == 1) throw IllegalStateException("a bug in the app's observer")
            }
            override fun syncStatusChanged(status: SyncStatus) { throw RuntimeException("also broken") }
            override fun localDataWiped(reason: WipeReason) {}
        })
        for (i in 0 until 4) {
            val id = erin.createKol(KolProfile(name = "Dr. Throwing $i", institution = "Clinic"))
            eventually("change $i reaches the observer after it threw") { id in seen }
        }
        assertTrue(calls.get() >= 4, "the observer was called ${calls.get()} times")
        erin.setObserver(null)
        erin.close()
    }

    test("sign-in: the provider is asked on first connect and again when the relay revokes the credential; with nothing new the records are wiped") {
        val dan = open("dan", "dan-phone")
        val rec = Recorder().also { dan.setObserver(it) }
        dan.createKol(KolProfile(name = "Dr. Revoked", institution = "Clinic"))
        val provider = ScriptedProvider(CredentialAnswer.DeviceCredential(tokenDan), CredentialAnswer.NoCredential)
        dan.startSyncWithSignIn(sync(""), provider)
        runBlocking { dan.waitUntilSynced(30_000) }
        assertEq(listOf(CredentialReason.INITIAL), provider.reasons.toList(), "asked once, on first connect")
        revokeDan()
        eventually("the status reads revoked") { dan.syncStatus().problem is SyncProblem.Revoked }
        val problem = dan.syncStatus().problem as SyncProblem.Revoked
        assertEq(listOf(CredentialReason.INITIAL, CredentialReason.REVOKED), provider.reasons.toList(), "asked again, told why")
        assertEq(4001, problem.closeCode, "the live socket was cut with the auth close code")
        assertTrue(problem.wiped, "wiped")
        assertEq(WipeReason.REVOKED, dan.syncStatus().wiped, "the status says the records were erased")
        eventually("the observer hears of the wipe") { rec.wiped == WipeReason.REVOKED }
        assertEq(0, dan.listKols().size, "no record of the tenant remains")
        assertTrue(provider.threads.none { it.contains("main") }, "the provider ran on a library thread: ${provider.threads}")
        Thread.sleep(1_500)
        assertEq(2, provider.reasons.size, "no retry storm: the provider is not asked again")
        runBlocking { dan.stopSync() }
        dan.close()
    }

    test("sign-out removes the store's files; the object refuses further use and a reopened store is empty") {
        val erin = open("alice", "erin-phone")
        erin.createKol(KolProfile(name = "Dr. Signed Out", institution = "Clinic"))
        val dir = File(work, "erin-phone")
        assertTrue(dir.exists(), "the store has files")
        runBlocking { erin.signOut() }
        assertTrue(!dir.exists(), "the store's directory is gone")
        assertThrows<LiaisonException.SignedOut>("a read after sign-out") { erin.listKols() }
        val again = open("alice", "erin-phone")
        assertEq(0, again.listKols().size, "a store reopened at the same path is empty")
        again.close()
        erin.close()
    }

    test("the library's logs reach the app's logger, without credentials") {
        eventually("a log record arrives") { logs.records.any { it.message.contains("store opened") } }
        val all = logs.records.toList()
        assertTrue(all.none { it.message.contains(tokenAlice) || it.message.contains(tokenBob) }, "no token in logs")
        assertTrue(all.all { it.target.startsWith("liaison") || it.target.contains("::") || it.target.isNotEmpty() }, "targets set")
    }

    liveQueryTests(alice, bob, kol)

    alice.stopSync()
    bob.stopSync()
    ui.close()
    alice.close()
    bob.close()
    if (failures > 0) {
        println("$failures Kotlin binding test(s) failed")
        exitProcess(1)
    }
    println("all Kotlin binding tests passed")
    exitProcess(0)
}
