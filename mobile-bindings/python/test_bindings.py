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
URL, FP = ENV["LIAISON_URL"], ENV["LIAISON_FINGERPRINT"]
TENANT, TEAM = ENV["LIAISON_TENANT"], ENV["LIAISON_TEAM"]
WORK = ENV["LIAISON_WORKDIR"]


class Recorder(L.LiaisonObserver):
    def __init__(self):
        self.changes = queue.Queue()
        self.status = None
        self.threads = set()

    def documents_changed(self, changes):
        self.threads.add(threading.get_native_id())
        for c in changes:
            self.changes.put(c)

    def sync_status_changed(self, status):
        self.status = status

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
        path=os.path.join(WORK, "py-" + device), tenant=TENANT, user=user, device=device, role=L.Role.MSL, team=TEAM))


def sync_config(token):
    return L.SyncConfig(url=URL, token=token, trust=L.TrustConfig.PINNED(sha256_hex=FP), backoff_min_ms=50, backoff_max_ms=500)


def eventually(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting until " + what)
        time.sleep(0.02)


class Bindings(unittest.TestCase):
    def test_offline_edits_merge_through_the_relay(self):
        alice, bob = open_store("alice", "alice-phone"), open_store("bob", "bob-phone")
        rec_a, rec_b = Recorder(), Recorder()
        alice.set_observer(rec_a)
        bob.set_observer(rec_b)
        kol = alice.create_kol(L.new_kol_profile("Dr. Aiko Tanaka", "Osaka University Hospital"))
        draft = L.new_engagement_plan(kol, "FY27 engagement")
        draft.notes = "Agenda: "
        plan = alice.create_plan(draft)
        alice.start_sync(sync_config(ENV["LIAISON_TOKEN_ALICE"]))
        bob.start_sync(sync_config(ENV["LIAISON_TOKEN_BOB"]))

        async def first_sync():
            await alice.wait_until_synced(30_000)
            self.assertEqual(await bob.fetch(plan, 30_000), L.RecordKind.ENGAGEMENT_PLAN)
        asyncio.run(first_sync())

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
                   lambda: alice.get_plan(plan).notes == expected and bob.get_plan(plan).notes == expected)
        self.assertEqual(len(rec_a.threads), 1, "observer calls come from one library thread")
        self.assertEqual({h.user for h in alice.history(plan)}, {"alice", "bob"})

        with self.assertRaises(L.LiaisonError.InvalidInput):
            alice.get_kol("not-an-id")
        with self.assertRaises(L.LiaisonError.WrongKind):
            alice.get_plan(kol)

        async def stop():
            await alice.stop_sync()
            await bob.stop_sync()
        asyncio.run(stop())

    def test_splice_indexes_count_utf16_units_after_non_bmp_characters(self):
        # Kotlin and Swift index text in UTF-16 units: an emoji outside the BMP is two of them.
        store = open_store("carol", "carol-phone")
        kol = store.create_kol(L.new_kol_profile("Dr. Ren", "Kobe"))
        draft = L.new_engagement_plan(kol, "emoji")
        draft.notes = "😀😀 ab"
        plan = store.create_plan(draft)

        def utf16(s):
            return len(s.encode("utf-16-le")) // 2

        self.assertEqual(utf16("😀😀 "), 5)
        store.splice_plan_notes(plan, utf16("😀😀 "), 0, "X")
        self.assertEqual(store.get_plan(plan).notes, "😀😀 Xab")
        # Deleting one emoji deletes two units.
        store.splice_plan_notes(plan, utf16("😀"), 2, "")
        self.assertEqual(store.get_plan(plan).notes, "😀 Xab")
        # An index inside a surrogate pair is refused, and nothing changes.
        with self.assertRaises(L.LiaisonError.InvalidInput):
            store.splice_plan_notes(plan, 1, 0, "!")
        with self.assertRaises(L.LiaisonError.InvalidInput):
            store.splice_plan_notes(plan, 0, 1, "")
        self.assertEqual(store.get_plan(plan).notes, "😀 Xab")


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
