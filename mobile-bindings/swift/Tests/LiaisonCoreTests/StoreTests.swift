// Runs with `swift test` on a Mac after ./build-xcframework.sh (not on the Linux CI machine,
// where the same scenarios run from Kotlin and Python against a real relay).
import XCTest
@testable import LiaisonCore

final class StoreTests: XCTestCase {
    func testCreateListAndErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        let store = try LiaisonStore.open(config: StoreConfig(
            path: dir.path, tenant: "pharma-a", user: "alice", device: "alice-iphone", role: .msl, team: "onc-east"))
        let kol = try store.createKol(profile: newKolProfile(name: "Dr. Aiko Tanaka", institution: "Osaka University Hospital"))
        var plan = newEngagementPlan(kolId: kol, title: "FY27")
        plan.notes = "Agenda: "
        let planId = try store.createPlan(plan: plan)
        try store.splicePlanNotes(planId: planId, index: 0, deleteCount: 0, insert: "患者 ")
        let read = try store.getPlan(id: planId)
        XCTAssertEqual(read.plan.notes, "患者 Agenda: ")
        var form = read.plan
        form.title = "FY27, saved"
        try store.updatePlan(id: planId, plan: form, version: read.version)
        XCTAssertEqual(try store.getPlan(id: planId).plan.title, "FY27, saved")
        XCTAssertEqual(try store.listKols().count, 1)
        XCTAssertThrowsError(try store.getKol(id: "not-an-id")) { error in
            guard case LiaisonError.InvalidInput = error else { return XCTFail("got \(error)") }
        }
    }

    func testWaitWithoutSyncFails() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        let store = try LiaisonStore.open(config: StoreConfig(
            path: dir.path, tenant: "pharma-a", user: "alice", device: "alice-iphone", role: .msl, team: "onc-east"))
        do {
            _ = try await store.waitUntilSynced(timeoutMs: 100)
            XCTFail("expected an error: sync is not running")
        } catch LiaisonError.Sync {
        }
    }
}
