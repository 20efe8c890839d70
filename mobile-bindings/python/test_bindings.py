"""Python check of the bindings against a real relay (the same scenario as the Kotlin tests).

Started by tests/tests/bindings.rs with the generated `liaison` module and the library in a
directory on PYTHONPATH, the relay's address and two MSLs' credentials in the environment.
"""

import asyncio
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


def open_store(user, device):
    return L.LiaisonStore.open(L.StoreConfig(
        path=os.path.join(WORK, "py-" + device), tenant=TENANT, user=user, device=device, role=L.UserRole.MSL, team=TEAM))


def new_kol(name, institution):
    # Python has no hand-written constructors (Kotlin and Swift do): a new profile names its
    # privacy state, the one field without a default.
    return L.KolProfile(name=name, institution=institution, privacy=L.PrivacyState.ACTIVE)


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


def revoke_dan():
    """Has the test harness revoke dan's credential through the relay's admin API, and waits."""
    open(os.path.join(WORK, "revoke-dan"), "w").close()
    eventually("the harness revoked dan's credential", lambda: os.path.exists(os.path.join(WORK, "revoked-dan")))


def eventually(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting until " + what)
        time.sleep(0.02)


class Bindings(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Alice and Bob sync through the relay for the whole class.
        cls.alice, cls.bob = open_store("alice", "alice-phone"), open_store("bob", "bob-phone")
        cls.rec_a, cls.rec_b = Recorder(), Recorder()
        cls.alice.set_observer(cls.rec_a)
        cls.bob.set_observer(cls.rec_b)
        cls.kol = cls.alice.create_kol(new_kol("Dr. Aiko Tanaka", "Osaka University Hospital"))
        cls.alice.start_sync(sync_config(ENV["LIAISON_TOKEN_ALICE"]))
        cls.bob.start_sync(sync_config(ENV["LIAISON_TOKEN_BOB"]))

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

    def share_plan(self, title, notes):
        """Alice creates a plan; returns its id once Bob has it."""
        alice, bob = self.alice, self.bob
        plan = alice.create_plan(L.EngagementPlan(kol_id=self.kol, title=title, notes=notes))

        async def first_sync():
            await alice.wait_until_synced(30_000)
            self.assertEqual(await bob.fetch(plan, 30_000), L.RecordKind.ENGAGEMENT_PLAN)
        asyncio.run(first_sync())
        return plan

    def test_offline_edits_merge_through_the_relay(self):
        alice, bob, rec_a, rec_b, kol = self.alice, self.bob, self.rec_a, self.rec_b, self.kol
        plan = self.share_plan("FY27 engagement", "Agenda: ")

        alice.set_network(L.NetworkState.DOWN)
        bob.set_network(L.NetworkState.DOWN)
        alice.splice_plan_notes(plan, 0, 0, "患者 first. ")
        bob.splice_plan_notes(plan, 8, 0, "discuss 😀 trial data")
        alice.set_network(L.NetworkState.UP)
        bob.set_network(L.NetworkState.UP)

        async def resync():
            await alice.wait_until_synced(30_000)
            await bob.wait_until_synced(30_000)
        asyncio.run(resync())
        rec_a.await_remote(plan)
        rec_b.await_remote(plan)
        expected = "患者 first. Agenda: discuss 😀 trial data"
        eventually("both hold both edits",
                   lambda: alice.get_plan(plan).plan.notes == expected and bob.get_plan(plan).plan.notes == expected)
        self.assertEqual(len(rec_a.threads), 1, "observer calls come from one library thread")
        self.assertEqual({h.user for h in alice.history(plan)}, {"alice", "bob"})

        with self.assertRaises(L.LiaisonError.InvalidInput):
            alice.get_kol("not-an-id")
        with self.assertRaises(L.LiaisonError.WrongKind):
            alice.get_plan(kol)

    def test_a_new_phone_gets_the_team_records_and_a_colleagues_new_record_arrives(self):
        alice = self.alice
        asyncio.run(alice.wait_until_synced(30_000))
        carol = open_store("carol", "carol-new-phone")
        rec = Recorder()
        carol.set_observer(rec)
        carol.start_sync(sync_config(ENV["LIAISON_TOKEN_CAROL"]))
        try:
            first = asyncio.run(carol.wait_for_first_sync(30_000))
            self.assertTrue(first.first_sync_complete)
            self.assertEqual(first.documents_received, first.documents_known)
            self.assertIn(self.kol, [k.id for k in carol.list_kols()], "the team's KOL is on the new phone")
            self.assertEqual(carol.sync_status().pending_documents, 0, "received records are not pending")

            fresh = alice.create_kol(new_kol("Dr. Ren Mori", "Nagoya"))
            eventually("Alice's new KOL reaches the new phone", lambda: fresh in [k.id for k in carol.list_kols()])
            def created():
                while not rec.changes.empty():
                    c = rec.changes.get()
                    if c.id == fresh and c.reason == L.ChangeReason.CREATED and c.remote:
                        return True
                return False
            eventually("the observer says it was created", created)
        finally:
            asyncio.run(carol.stop_sync())
            carol.set_observer(None)
            del carol

    def test_a_form_saved_from_a_stale_read_keeps_the_colleagues_edits(self):
        alice, bob = self.alice, self.bob
        plan = self.share_plan("FY28 engagement", "Agenda")
        # Alice opens the plan's form.
        form = alice.get_plan(plan)

        # Bob retitles, adds an activity and types into the notes; it reaches Alice.
        bobs = bob.get_plan(plan)
        bobs.plan.title = "FY28, Bob's title"
        visit = L.PlanActivity(id="bob-visit", description="Visit in March", owner="bob", status=L.TaskStatus.OPEN)
        bobs.plan.activities.append(visit)
        bob.update_plan(plan, bobs.plan, bobs.version)
        bob.splice_plan_notes(plan, 6, 0, " for Bob")
        asyncio.run(bob.wait_until_synced(30_000))
        eventually("Bob's edits reach Alice", lambda: alice.get_plan(plan).plan.notes == "Agenda for Bob")

        # Alice saves her stale form with one objective added.
        objective = L.PlanItem(id="alice-1", text="Alice's objective")
        form.plan.objectives.append(objective)
        alice.update_plan(plan, form.plan, form.version)
        saved = alice.get_plan(plan).plan
        self.assertEqual(saved.title, "FY28, Bob's title", "Bob's title survives")
        self.assertEqual(saved.activities, [visit], "Bob's activity survives")
        self.assertEqual(saved.notes, "Agenda for Bob", "Bob's text survives")
        self.assertEqual(saved.objectives, [objective], "Alice's objective is there")
        asyncio.run(alice.wait_until_synced(30_000))
        eventually("Bob sees the same plan", lambda: bob.get_plan(plan).plan == saved)

        # A version read from another record is stale: the app reads again.
        other = alice.get_kol(self.kol)
        with self.assertRaises(L.LiaisonError.StaleVersion):
            alice.update_plan(plan, saved, other.version)

    def test_splice_indexes_count_utf16_units_after_non_bmp_characters(self):
        # Kotlin and Swift index text in UTF-16 units: an emoji outside the BMP is two of them.
        store = open_store("carol", "carol-phone")
        kol = store.create_kol(new_kol("Dr. Ren", "Kobe"))
        plan = store.create_plan(L.EngagementPlan(kol_id=kol, title="emoji", notes="😀😀 ab"))

        def utf16(s):
            return len(s.encode("utf-16-le")) // 2

        self.assertEqual(utf16("😀😀 "), 5)
        store.splice_plan_notes(plan, utf16("😀😀 "), 0, "X")
        self.assertEqual(store.get_plan(plan).plan.notes, "😀😀 Xab")
        # Deleting one emoji deletes two units.
        store.splice_plan_notes(plan, utf16("😀"), 2, "")
        self.assertEqual(store.get_plan(plan).plan.notes, "😀 Xab")
        # An index inside a surrogate pair is refused, and nothing changes.
        with self.assertRaises(L.LiaisonError.InvalidInput):
            store.splice_plan_notes(plan, 1, 0, "!")
        with self.assertRaises(L.LiaisonError.InvalidInput):
            store.splice_plan_notes(plan, 0, 1, "")
        # Indexes are signed (Kotlin's and Swift's Int): a negative one is refused too.
        with self.assertRaises(L.LiaisonError.InvalidInput):
            store.splice_plan_notes(plan, -1, 0, "!")
        self.assertEqual(store.get_plan(plan).plan.notes, "😀 Xab")


    def test_sign_in_asks_the_provider_again_on_revocation_and_wipes_when_nothing_comes(self):
        dan = open_store("dan", "dan-phone")
        rec = Recorder()
        dan.set_observer(rec)
        dan.create_kol(new_kol("Dr. Revoked", "Clinic"))
        provider = ScriptedProvider(L.CredentialAnswer.DEVICE_CREDENTIAL(token=ENV["LIAISON_TOKEN_DAN"]),
                                    L.CredentialAnswer.NO_CREDENTIAL())
        dan.start_sync_with_sign_in(sync_config(""), provider)
        asyncio.run(dan.wait_until_synced(30_000))
        self.assertEqual(provider.reasons, [L.CredentialReason.INITIAL], "asked once, on first connect")
        revoke_dan()
        eventually("the status reads revoked", lambda: isinstance(dan.sync_status().problem, L.SyncProblem.REVOKED))
        problem = dan.sync_status().problem
        self.assertEqual(provider.reasons, [L.CredentialReason.INITIAL, L.CredentialReason.REVOKED])
        self.assertEqual(problem.close_code, 4001)
        self.assertTrue(problem.wiped)
        eventually("the observer hears of the wipe", lambda: rec.wiped == L.WipeReason.REVOKED)
        self.assertEqual(dan.list_kols(), [], "no record of the tenant remains")
        self.assertNotIn(threading.get_native_id(), provider.threads, "the provider ran on a library thread")
        time.sleep(1.5)
        self.assertEqual(len(provider.reasons), 2, "no retry storm: the provider is not asked again")
        asyncio.run(dan.stop_sync())
        dan.set_observer(None)

    def test_a_wrong_credential_reads_unauthorized_with_its_status(self):
        store = open_store("alice", "frank-phone")
        store.start_sync(sync_config("lsn_not_a_real_token"))
        eventually("the typed state reads unauthorized",
                   lambda: isinstance(store.sync_status().problem, L.SyncProblem.UNAUTHORIZED))
        problem = store.sync_status().problem
        self.assertEqual(problem.http_status, 401)
        self.assertIsInstance(problem.reason, L.AuthProblem.UNKNOWN)
        asyncio.run(store.stop_sync())

    def test_sign_out_removes_the_files_and_a_reopened_store_is_empty(self):
        store = open_store("alice", "gina-phone")
        store.create_kol(new_kol("Dr. Signed Out", "Clinic"))
        path = os.path.join(WORK, "py-gina-phone")
        self.assertTrue(os.path.isdir(path))
        asyncio.run(store.sign_out())
        self.assertFalse(os.path.exists(path), "the store's directory is gone")
        with self.assertRaises(L.LiaisonError.SignedOut):
            store.list_kols()
        again = open_store("alice", "gina-phone")
        self.assertEqual(again.list_kols(), [], "a store reopened at the same path is empty")

    def test_an_observer_that_raises_still_hears_every_later_change(self):
        store = open_store("alice", "hana-phone")
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
            kol = store.create_kol(new_kol(f"Dr. Raising {i}", "Clinic"))

            def came(kol=kol):
                while not seen.empty():
                    arrived.add(seen.get())
                return kol in arrived

            eventually(f"change {i} reaches the observer after it raised", came)
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
