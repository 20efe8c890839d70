// Runs with `swift test` on a Mac after ./build-xcframework.sh (not on the Linux CI machine,
// where the same scenarios run from Kotlin and Python against a real relay).
import XCTest
@testable import LiaisonCore

final class StoreTests: XCTestCase {
    func testCreateListAndErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        let store = try LiaisonStore.open(config: StoreConfig(
            path: dir.path, tenant: "pharma-a", user: "alice", device: "alice-iphone", role: .msl, team: "onc-east"))
        let kol = try store.createKol(profile: KolProfile(name: "Dr. Aiko Tanaka", institution: "Osaka University Hospital"))
        let planId = try store.createPlan(plan: EngagementPlan(kolId: kol, title: "FY27", notes: "Agenda: "))
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
        XCTAssertThrowsError(try store.splicePlanNotes(planId: planId, index: -1, deleteCount: 0, insert: "x")) { error in
            guard case LiaisonError.InvalidInput = error else { return XCTFail("got \(error)") }
        }
    }

    func testNewRecordsNeedOnlyTheFieldsThatMatter() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        let store = try LiaisonStore.open(config: StoreConfig(
            path: dir.path, tenant: "pharma-a", user: "alice", device: "alice-iphone", role: .msl, team: "onc-east"))
        let kol = try store.createKol(profile: KolProfile(name: "Dr. Defaults", institution: "Clinic"))
        let visit = try store.createInteraction(interaction: Interaction(kolId: kol, start: 1_700_000_000_000, channel: .phone))
        XCTAssertEqual(try store.getInteraction(id: visit).interaction.status, .draft)
        let insight = try store.createInsight(insight: MedicalInsight(text: "Prefers shorter regimens", kolIds: [kol]))
        XCTAssertEqual(try store.getInsight(id: insight).insight.kolIds, [kol])
        let request = try store.createRequest(request: MedicalInformationRequest(
            kolId: kol, question: "Dosing in renal impairment?", origin: .unsolicited, recipient: "Dr. Defaults",
            deliveryMethod: .email))
        XCTAssertEqual(try store.getRequest(id: request).request.fulfilment, .open)
        XCTAssertEqual(FollowUp(id: "f1", description: "Send the paper", owner: "alice").status, .open)
        XCTAssertEqual(InteractionChannel.allCases.count, 5)
        let profile = try store.getKol(id: kol).profile
        XCTAssertEqual(profile.privacy, .active)
        let decoded = try JSONDecoder().decode(KolProfile.self, from: JSONEncoder().encode(profile))
        XCTAssertEqual(decoded, profile)
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
