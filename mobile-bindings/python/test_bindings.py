"""Python check of the bindings against a real relay (the same scenario as the Kotlin tests).

Started by tests/tests/bindings.rs with the generated `liaison` module and the library in a
directory on PYTHONPATH, the relay's address and two MSLs' credentials in the environment.

Every store call that touches the disk is a coroutine (uniffi async): the tests await them on
an asyncio event loop, one per test (`IsolatedAsyncioTestCase`).
"""

import asyncio
import inspect
import os
import queue
import sys
import threading
import time
import unittest

import liaison as L

ENV = os.environ
URL, PIN = ENV["LIAISON_URL"], ENV["LIAISON_SPKI_PIN"]
TENANT, TEAM = ENV["LIAISON_TENANT"], ENV["LIAISON_TEAM"]
WORK = ENV["LIAISON_WORKDIR"]


class Recorder(L.LiaisonObserver):
    def __init__(self):
        self.changes = queue.Queue()
        self.status = None
        self.wiped = None
        self.threads = set()

    def documents_changed(self, changes):
        self.threads.add(threading.get_native_id())
        for c in changes:
            self.changes.put(c)

    def sync_status_changed(self, status):
        self.status = status

    def local_data_wiped(self, reason):
        self.wiped = reason

    def await_remote(self, doc_id, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no remote change of {doc_id} reached the observer")
            try:
                c = self.changes.get(timeout=left)
            except queue.Empty:
                continue
            if c.id == doc_id and c.remote:
                return c


async def open_store(user, device):
    return await L.LiaisonStore.open(L.StoreConfig(
        path=os.path.join(WORK, "py-" + device), tenant=TENANT, user=user, device=device, role=L.UserRole.MSL, team=TEAM))


def new_kol(name, institution):
    # Python has no hand-written constructors (Kotlin and Swift do): a new profile names its
    # privacy state, the one field without a default.
    return L.KolProfile(name=name, institution=institution, privacy=L.PrivacyState.ACTIVE)


# Interests of 50,000 characters: a write of such a KOL takes a while (built, saved, fsynced).
BIG_INTERESTS = "Immuno-oncology, biomarkers; " * 1_700


def big_kol(name):
    kol = new_kol(name, "Clinic")
    kol.scientific_interests = BIG_INTERESTS
    return kol


def sync_config(token):
    return L.SyncConfig(url=URL, token=token, trust=L.TrustConfig.PINNED_KEYS(spki_pins=[PIN]), backoff_min_ms=50, backoff_max_ms=500)


class ScriptedProvider(L.CredentialProvider):
    """Hands out `answers` in turn (the last from then on) and records why it was asked."""

    def __init__(self, *answers):
        self.answers, self.reasons, self.threads = answers, [], set()

    def credential(self, reason):
        self.reasons.append(reason)
        self.threads.add(threading.get_native_id())
        return self.answers[min(len(self.reasons), len(self.answers)) - 1]

    def credential_issued(self, token, expires_at_ms):
        pass


async def revoke_dan():
    """Has the test harness revoke dan's credential through the relay's admin API, and waits."""
    open(os.path.join(WORK, "revoke-dan"), "w").close()
    await eventually("the harness revoked dan's credential", lambda: os.path.exists(os.path.join(WORK, "revoked-dan")))


async def eventually(what, cond, timeout=30.0):
    """Waits until `cond()` (a plain or an async function) is true, without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        ok = cond()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting until " + what)
        await asyncio.sleep(0.02)


class Updates(L.QueryObserver):
    """A live query's updates, in a queue; raises at the first `throw_first` of them."""

    def __init__(self, throw_first=0):
        self.queue, self.throw_first = queue.Queue(), throw_first

    def on_update(self, update):
        if self.throw_first > 0:
            self.throw_first -= 1
            raise RuntimeError("a bug in the app's observer")
        self.queue.put(update)

    async def next(self, what, cond, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                u = self.queue.get_nowait()
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise AssertionError("timed out waiting for " + what)
                await asyncio.sleep(0.02)
                continue
            if cond(u):
                return u


def ids(update):
    return [r.id for r in update.rows.rows]


class LiveQueries:
    """Live queries on Bob's phone while Alice writes on hers (the relay in between); mixed
    into `Bindings`, whose stores and relay they use."""

    async def test_the_kol_list_answers_first_then_a_colleagues_new_kol_is_an_insertion(self):
        seen = Updates()
        handle = self.bob.watch_kols(None, seen)
        first = await seen.next("the first answer", lambda u: True)
        self.assertTrue(isinstance(first.change, L.RowChange.RESET))
        fresh = await self.alice.create_kol(new_kol("Dr. Py Live", "Kobe"))
        u = await seen.next("Alice's new KOL", lambda u: fresh in ids(u))
        self.assertTrue(isinstance(u.change, L.RowChange.DIFF), u.change)
        self.assertIn(ids(u).index(fresh), u.change.inserted)
        handle.cancel()
        later = await self.alice.create_kol(new_kol("Dr. Py After", "Sendai"))
        async def bob_has_it():
            return any(k.id == later for k in await self.bob.list_kols())
        await eventually("the later KOL reached Bob", bob_has_it)
        await asyncio.sleep(0.3)
        self.assertTrue(all(later not in ids(u) for u in list(seen.queue.queue)), "the cancelled watch heard nothing more")

    async def test_a_kols_interactions_come_newest_first(self):
        seen = Updates()
        handle = self.bob.watch_interactions(self.kol, seen)
        await seen.next("the first answer", lambda u: True)
        day, base = 86_400_000, 1_770_000_000_000
        made = []
        for start in (base + 2 * day, base, base + 5 * day):
            visit = L.Interaction(kol_id=self.kol, start=start, channel=L.InteractionChannel.VIDEO, status=L.RecordStatus.DRAFT)
            made.append(await self.alice.create_interaction(visit))
        u = await seen.next("Alice's visits", lambda u: all(m in ids(u) for m in made))
        starts = [r.start for r in u.rows.rows]
        self.assertEqual(starts, sorted(starts, reverse=True))
        self.assertEqual([i for i in ids(u) if i in made][0], made[2], "the latest first")
        self.assertEqual([r.id for r in await self.bob.interactions_of_kol(self.kol)], ids(u), "the one-shot query agrees")
        handle.cancel()

    async def test_presence_shows_a_colleague_editing_then_leaving(self):
        plan = await self.alice.create_plan(L.EngagementPlan(kol_id=self.kol, title="Py presence"))
        await self.alice.wait_until_synced(30_000)
        self.assertEqual(await self.bob.fetch(plan, 30_000), L.RecordKind.ENGAGEMENT_PLAN)
        lists = queue.Queue()

        class Seen(L.PresenceObserver):
            def on_presence(self, present):
                lists.put(present)

        handle = self.bob.watch_presence(plan, Seen())

        async def next_list(what, cond, timeout=30.0):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    present = lists.get_nowait()
                except queue.Empty:
                    if time.monotonic() > deadline:
                        raise AssertionError("timed out waiting for " + what)
                    await asyncio.sleep(0.02)
                    continue
                if cond(present):
                    return present

        await next_list("the first, empty, list", lambda p: p == [])
        self.alice.publish_presence(plan, "editing notes")
        seen = await next_list("alice editing", lambda p: any(e.user == "alice" for e in p))
        self.assertEqual([e.state for e in seen if e.user == "alice"], ["editing notes"])
        self.alice.publish_presence(plan, None)
        await next_list("alice gone", lambda p: all(e.user != "alice" for e in p))
        handle.cancel()
        with self.assertRaises(L.LiaisonError.InvalidInput):
            self.alice.publish_presence(plan, "x" * 65)

    async def test_background_sync_with_sync_running_pushes_an_edit_and_reports(self):
        await self.bob.create_kol(new_kol("Dr. Py Background", "Nagoya"))
        report = await self.bob.background_sync(None, 30_000)
        self.assertTrue(report.completed, report)
        self.assertEqual(report.pending_documents, 0)
        self.assertIsNone(report.problem)
        with self.assertRaises(L.LiaisonError.InvalidInput):
            await self.bob.background_sync(None, -1)

    async def test_an_observer_that_raises_still_hears_later_updates(self):
        seen = Updates(throw_first=1)
        handle = self.bob.watch_kols(None, seen)
        fresh = await self.alice.create_kol(new_kol("Dr. Py Raised", "Fukuoka"))
        await seen.next("the KOL after the raise", lambda u: fresh in ids(u))
        handle.cancel()


class Bindings(LiveQueries, unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        # Alice and Bob sync through the relay for the whole class.
        async def start():
            cls.alice, cls.bob = await open_store("alice", "alice-phone"), await open_store("bob", "bob-phone")
            cls.rec_a, cls.rec_b = Recorder(), Recorder()
            cls.alice.set_observer(cls.rec_a)
            cls.bob.set_observer(cls.rec_b)
            cls.kol = await cls.alice.create_kol(new_kol("Dr. Aiko Tanaka", "Osaka University Hospital"))
            await cls.alice.start_sync(sync_config(ENV["LIAISON_TOKEN_ALICE"]))
            await cls.bob.start_sync(sync_config(ENV["LIAISON_TOKEN_BOB"]))
        asyncio.run(start())

    @classmethod
    def tearDownClass(cls):
        async def stop():
            await cls.alice.stop_sync()
            await cls.bob.stop_sync()
        asyncio.run(stop())
        # No library thread may call into Python once the interpreter is finalizing: clear the
        # observers and drop the stores (their notifier threads end with them) before exit.
        cls.alice.set_observer(None)
        cls.bob.set_observer(None)
        del cls.alice, cls.bob

    async def share_plan(self, title, notes):
        """Alice creates a plan; returns its id once Bob has it."""
        alice, bob = self.alice, self.bob
        plan = await alice.create_plan(L.EngagementPlan(kol_id=self.kol, title=title, notes=notes))
        await alice.wait_until_synced(30_000)
        self.assertEqual(await bob.fetch(plan, 30_000), L.RecordKind.ENGAGEMENT_PLAN)
        return plan

    async def test_offline_edits_merge_through_the_relay(self):
        alice, bob, rec_a, rec_b, kol = self.alice, self.bob, self.rec_a, self.rec_b, self.kol
        plan = await self.share_plan("FY27 engagement", "Agenda: ")

        alice.set_network(L.NetworkState.DOWN)
        bob.set_network(L.NetworkState.DOWN)
        await alice.splice_plan_notes(plan, 0, 0, "患者 first. ")
        await bob.splice_plan_notes(plan, 8, 0, "discuss 😀 trial data")
        alice.set_network(L.NetworkState.UP)
        bob.set_network(L.NetworkState.UP)

        await alice.wait_until_synced(30_000)
        await bob.wait_until_synced(30_000)
        rec_a.await_remote(plan)
        rec_b.await_remote(plan)
        expected = "患者 first. Agenda: discuss 😀 trial data"
        async def both_hold_both():
            return (await alice.get_plan(plan)).plan.notes == expected and (await bob.get_plan(plan)).plan.notes == expected
        await eventually("both hold both edits", both_hold_both)
        self.assertEqual(len(rec_a.threads), 1, "observer calls come from one library thread")
        self.assertEqual({h.user for h in await alice.history(plan)}, {"alice", "bob"})

        with self.assertRaises(L.LiaisonError.InvalidInput):
            await alice.get_kol("not-an-id")
        with self.assertRaises(L.LiaisonError.WrongKind):
            await alice.get_plan(kol)

    async def test_a_new_phone_gets_the_team_records_and_a_colleagues_new_record_arrives(self):
        alice = self.alice
        await alice.wait_until_synced(30_000)
        carol = await open_store("carol", "carol-new-phone")
        rec = Recorder()
        carol.set_observer(rec)
        await carol.start_sync(sync_config(ENV["LIAISON_TOKEN_CAROL"]))
        try:
            first = await carol.wait_for_first_sync(30_000)
            self.assertTrue(first.first_sync_complete)
            self.assertEqual(first.documents_received, first.documents_known)
            self.assertIn(self.kol, [k.id for k in await carol.list_kols()], "the team's KOL is on the new phone")
            self.assertEqual(carol.sync_status().pending_documents, 0, "received records are not pending")

            fresh = await alice.create_kol(new_kol("Dr. Ren Mori", "Nagoya"))
            async def arrived():
                return fresh in [k.id for k in await carol.list_kols()]
            await eventually("Alice's new KOL reaches the new phone", arrived)
            def created():
                while not rec.changes.empty():
                    c = rec.changes.get()
                    if c.id == fresh and c.reason == L.ChangeReason.CREATED and c.remote:
                        return True
                return False
            await eventually("the observer says it was created", created)
        finally:
            await carol.stop_sync()
            carol.set_observer(None)
            del carol

    async def test_a_form_saved_from_a_stale_read_keeps_the_colleagues_edits(self):
        alice, bob = self.alice, self.bob
        plan = await self.share_plan("FY28 engagement", "Agenda")
        # Alice opens the plan's form.
        form = await alice.get_plan(plan)

        # Bob retitles, adds an activity and types into the notes; it reaches Alice.
        bobs = await bob.get_plan(plan)
        bobs.plan.title = "FY28, Bob's title"
        visit = L.PlanActivity(id="bob-visit", description="Visit in March", owner="bob", status=L.TaskStatus.OPEN)
        bobs.plan.activities.append(visit)
        await bob.update_plan(plan, bobs.plan, bobs.version)
        await bob.splice_plan_notes(plan, 6, 0, " for Bob")
        await bob.wait_until_synced(30_000)
        async def reached_alice():
            return (await alice.get_plan(plan)).plan.notes == "Agenda for Bob"
        await eventually("Bob's edits reach Alice", reached_alice)

        # Alice saves her stale form with one objective added.
        objective = L.PlanItem(id="alice-1", text="Alice's objective")
        form.plan.objectives.append(objective)
        await alice.update_plan(plan, form.plan, form.version)
        saved = (await alice.get_plan(plan)).plan
        self.assertEqual(saved.title, "FY28, Bob's title", "Bob's title survives")
        self.assertEqual(saved.activities, [visit], "Bob's activity survives")
        self.assertEqual(saved.notes, "Agenda for Bob", "Bob's text survives")
        self.assertEqual(saved.objectives, [objective], "Alice's objective is there")
        await alice.wait_until_synced(30_000)
        async def bob_has_it():
            return (await bob.get_plan(plan)).plan == saved
        await eventually("Bob sees the same plan", bob_has_it)

        # A version read from another record is stale: the app reads again.
        other = await alice.get_kol(self.kol)
        with self.assertRaises(L.LiaisonError.StaleVersion):
            await alice.update_plan(plan, saved, other.version)

    async def test_splice_indexes_count_utf16_units_after_non_bmp_characters(self):
        # Kotlin and Swift index text in UTF-16 units: an emoji outside the BMP is two of them.
        store = await open_store("carol", "carol-phone")
        kol = await store.create_kol(new_kol("Dr. Ren", "Kobe"))
        plan = await store.create_plan(L.EngagementPlan(kol_id=kol, title="emoji", notes="😀😀 ab"))

        def utf16(s):
            return len(s.encode("utf-16-le")) // 2

        self.assertEqual(utf16("😀😀 "), 5)
        await store.splice_plan_notes(plan, utf16("😀😀 "), 0, "X")
        self.assertEqual((await store.get_plan(plan)).plan.notes, "😀😀 Xab")
        # Deleting one emoji deletes two units.
        await store.splice_plan_notes(plan, utf16("😀"), 2, "")
        self.assertEqual((await store.get_plan(plan)).plan.notes, "😀 Xab")
        # An index inside a surrogate pair is refused, and nothing changes.
        with self.assertRaises(L.LiaisonError.InvalidInput):
            await store.splice_plan_notes(plan, 1, 0, "!")
        with self.assertRaises(L.LiaisonError.InvalidInput):
            await store.splice_plan_notes(plan, 0, 1, "")
        # Indexes are signed (Kotlin's and Swift's Int): a negative one is refused too.
        with self.assertRaises(L.LiaisonError.InvalidInput):
            await store.splice_plan_notes(plan, -1, 0, "!")
        self.assertEqual((await store.get_plan(plan)).plan.notes, "😀 Xab")


    async def test_a_call_leaves_the_event_loop_free_while_writes_are_on_disk(self):
        store = await open_store("alice", "ida-phone")
        in_flight, ticks = False, 0

        async def ticker():
            nonlocal ticks
            while True:
                if in_flight:
                    ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        in_flight = True
        for i in range(5):
            await store.create_kol(big_kol(f"Dr. Busy {i}"))
        in_flight = False
        task.cancel()
        # A blocking call would hold the loop until it returned: the ticker could not tick.
        self.assertGreaterEqual(ticks, 5, "the loop ran other work while the writes were in flight")
        self.assertEqual(len([k for k in await store.list_kols() if k.name.startswith("Dr. Busy")]), 5)

    async def test_a_cancelled_call_returns_at_once_and_its_record_is_whole_or_absent(self):
        store = await open_store("alice", "jun-phone")
        started = time.monotonic()
        await store.create_kol(big_kol("Dr. Timed"))
        write_s = time.monotonic() - started
        in_flight = 0
        for attempt in range(6):
            task = asyncio.create_task(store.create_kol(big_kol(f"Dr. Cancelled {attempt}")))
            await asyncio.sleep(0)  # the call starts: its write is queued
            if attempt:
                await asyncio.sleep(attempt * write_s / 8)
            if task.done():
                continue  # the write finished before the cancel
            cancelled = time.monotonic()
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertLess(time.monotonic() - cancelled, 0.05, "cancelling returned at once")
            in_flight += 1
        self.assertGreaterEqual(in_flight, 1, "the call cancelled right after it started was in flight")
        # Writes apply in call order: once this one is back, the cancelled ones ran or never will.
        await store.create_kol(new_kol("Dr. After", "Clinic"))
        kols = await store.list_kols()
        for attempt in range(6):
            found = [k for k in kols if k.name == f"Dr. Cancelled {attempt}"]
            self.assertLessEqual(len(found), 1)
            if found:
                self.assertEqual((await store.get_kol(found[0].id)).profile.scientific_interests, BIG_INTERESTS,
                                 "a write that began is stored whole")
        self.assertIn("Dr. After", [k.name for k in kols], "the store takes writes after the cancellations")

    async def test_sign_in_asks_the_provider_again_on_revocation_and_wipes_when_nothing_comes(self):
        dan = await open_store("dan", "dan-phone")
        rec = Recorder()
        dan.set_observer(rec)
        await dan.create_kol(new_kol("Dr. Revoked", "Clinic"))
        provider = ScriptedProvider(L.CredentialAnswer.DEVICE_CREDENTIAL(token=ENV["LIAISON_TOKEN_DAN"]),
                                    L.CredentialAnswer.NO_CREDENTIAL())
        await dan.start_sync_with_sign_in(sync_config(""), provider)
        await dan.wait_until_synced(30_000)
        self.assertEqual(provider.reasons, [L.CredentialReason.INITIAL], "asked once, on first connect")
        await revoke_dan()
        await eventually("the status reads revoked", lambda: isinstance(dan.sync_status().problem, L.SyncProblem.REVOKED))
        problem = dan.sync_status().problem
        self.assertEqual(provider.reasons, [L.CredentialReason.INITIAL, L.CredentialReason.REVOKED])
        self.assertEqual(problem.close_code, 4001)
        self.assertTrue(problem.wiped)
        await eventually("the observer hears of the wipe", lambda: rec.wiped == L.WipeReason.REVOKED)
        self.assertEqual(await dan.list_kols(), [], "no record of the tenant remains")
        self.assertNotIn(threading.get_native_id(), provider.threads, "the provider ran on a library thread")
        await asyncio.sleep(1.5)
        self.assertEqual(len(provider.reasons), 2, "no retry storm: the provider is not asked again")
        await dan.stop_sync()
        dan.set_observer(None)

    async def test_a_wrong_credential_reads_unauthorized_with_its_status(self):
        store = await open_store("alice", "frank-phone")
        await store.start_sync(sync_config("lsn_not_a_real_token"))
        await eventually("the typed state reads unauthorized",
                   lambda: isinstance(store.sync_status().problem, L.SyncProblem.UNAUTHORIZED))
        problem = store.sync_status().problem
        self.assertEqual(problem.http_status, 401)
        self.assertIsInstance(problem.reason, L.AuthProblem.UNKNOWN)
        await store.stop_sync()

    async def test_sign_out_removes_the_files_and_a_reopened_store_is_empty(self):
        store = await open_store("alice", "gina-phone")
        await store.create_kol(new_kol("Dr. Signed Out", "Clinic"))
        path = os.path.join(WORK, "py-gina-phone")
        self.assertTrue(os.path.isdir(path))
        await store.sign_out()
        self.assertFalse(os.path.exists(path), "the store's directory is gone")
        with self.assertRaises(L.LiaisonError.SignedOut):
            await store.list_kols()
        again = await open_store("alice", "gina-phone")
        self.assertEqual(await again.list_kols(), [], "a store reopened at the same path is empty")

    async def test_an_observer_that_raises_still_hears_every_later_change(self):
        store = await open_store("alice", "hana-phone")
        seen, calls = queue.Queue(), []

        class Raising(L.LiaisonObserver):
            def documents_changed(self, changes):
                calls.append(1)
                for c in changes:
                    seen.put(c.id)
                if len(calls) % 2 == 1:
                    raise RuntimeError("a bug in the app's observer")

            def sync_status_changed(self, status):
                raise ValueError("also broken")

            def local_data_wiped(self, reason):
                pass

        store.set_observer(Raising())
        arrived = set()
        for i in range(4):
            kol = await store.create_kol(new_kol(f"Dr. Raising {i}", "Clinic"))

            def came(kol=kol):
                while not seen.empty():
                    arrived.add(seen.get())
                return kol in arrived

            await eventually(f"change {i} reaches the observer after it raised", came)
        self.assertGreaterEqual(len(calls), 4)
        store.set_observer(None)



if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit without finalizing the interpreter: a native thread of the library still attached to
    # it (a log sink or observer call in flight) would otherwise be force-unwound and abort the
    # process ("FATAL: exception not rethrown") after every test passed.
    os._exit(0 if result.wasSuccessful() else 1)
